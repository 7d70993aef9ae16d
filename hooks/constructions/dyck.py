"""Dyck(K, h): the two-layer construction with O(h log K) memory (Sarrof et al. 2024)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

import languages
from hooks.constructions._core import Construction, assemble, column, empty_allowed, indicator, make_config
from languages.vocab import END_ID, Vocab


def _bits(K: int) -> int:
    return max(1, math.ceil(math.log2(K)))


def dyck(K: int = 8, h: int = 10, *, dtype: str = "float32") -> Construction:
    """Dyck(K, h) exactly, at every length (Sarrof et al. 2024: a depth counter, then one memory block per depth).

    Layer 0 -- depth counter, state size 1: gate 1; input +1 on an open bracket, -1 on a close, 0 on
    BOS/PAD. ``h^0_t`` is the stack depth after token t.

    Layer 1 -- h memory blocks of ``⌈log2 K⌉`` bits each (state size ``h·⌈log2 K⌉``; 30 for Dyck(8, 10)):
    an open bracket of type k that brings the depth to d resets block d to the binary code of k (gate 0,
    input code(k)); every other (token, block) keeps its value (gate 1, input 0). Block d therefore
    holds the type of the most recent open bracket pushed at depth d, which is the stack's entry d.
    Binary codes (k = Σ_i bit_i 2^i) reach the optimal O(h log K) memory; a block is only read when
    the depth is d ≥ 1, when it has been written, so "empty" needs no code.

    Readout at position t, from the depth d and block d: an open bracket is allowed iff d < h; the
    only closing bracket allowed (iff d ≥ 1) is the one matching block d; END iff d = 0.

    Counters stay small integers (|d| ≤ h on member prefixes), so float32 is exact at any length.
    Decoders: ``depth`` (int), ``top`` (index k of the open bracket on top, -1 when the stack is empty).
    """
    language = languages.get("dyck", K=K, h=h)
    vocab = Vocab(language.alphabet)
    V, nb = vocab.size, _bits(K)
    pairs = list(language.pairs)
    open_ids = column(vocab, [o for o, _ in pairs])
    close_ids = column(vocab, [c for _, c in pairs])
    step = indicator(V, open_ids + close_ids, [1.0] * K + [-1.0] * K)  # [V]
    is_open = indicator(V, open_ids)  # [V]
    codes = torch.tensor([[(k >> i) & 1 for i in range(nb)] for k in range(K)], dtype=torch.float64)
    code_of = torch.zeros(V, nb, dtype=torch.float64)
    code_of[open_ids] = codes
    depths = torch.arange(1, h + 1, dtype=torch.float64)  # block j holds depth j (1-based)
    weights = torch.tensor([2.0**i for i in range(nb)], dtype=torch.float64)
    cfg = make_config(language, f"dyck{K}-{h}", [1, h * nb], dtype)

    def a0(u: Tensor) -> Tensor:
        return u.new_ones(*u.shape[:2], 1)

    def b0(u: Tensor) -> Tensor:
        x = cfg.split(u)[0]
        return x @ step.to(u)[:, None]

    def _write(u: Tensor) -> Tensor:  # [B, L, h]: 1 where this token opens block d
        x, d = cfg.split(u)[:2]
        at = ((d - depths.to(u)).abs() < 0.5).to(u)  # [B, L, h]
        return (x @ is_open.to(u))[..., None] * at

    def a1(u: Tensor) -> Tensor:
        return (1.0 - _write(u)).repeat_interleave(nb, dim=-1)

    def b1(u: Tensor) -> Tensor:
        x = cfg.split(u)[0]
        code = x @ code_of.to(u)  # [B, L, nb]
        return (_write(u)[..., None] * code[..., None, :]).flatten(-2)

    def depth(states) -> Tensor:
        return torch.round(states[0][..., 0]).long()

    def top(states) -> Tensor:
        d = depth(states)
        blocks = states[1].reshape(*states[1].shape[:2], h, nb)
        idx = (d - 1).clamp(0, h - 1)
        bits = torch.gather(blocks, 2, idx[..., None, None].expand(-1, -1, 1, nb))[:, :, 0]
        k = ((bits > 0.5).to(weights.dtype) @ weights.to(bits.device)).long()
        return torch.where(d >= 1, k, torch.full_like(k, -1))

    def readout(states) -> Tensor:
        d, k = depth(states), top(states)
        out = empty_allowed(states[0], V)
        out[..., open_ids] = (d < h)[..., None]
        close = torch.nn.functional.one_hot(k.clamp(0, K - 1), K).bool() & ((k >= 0) & (k < K))[..., None]
        out[..., close_ids] = close
        out[..., END_ID] = d == 0
        return out

    model = assemble(cfg, [(a0, b0), (a1, b1)], readout)
    return Construction(
        name=f"dyck(K={K}, h={h})",
        language=language,
        model=model,
        readout=readout,
        decoders={"depth": depth, "top": top},
        description=f"Dyck({K},{h}): depth counter (1) + {h} blocks x {nb} bits ({h * nb})",
    )
