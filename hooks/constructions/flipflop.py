"""Flip-flop: previous-token channel, then a set/reset memory (exact at every length)."""
from __future__ import annotations

import torch
from torch import Tensor

import languages
from hooks.constructions._core import (
    Construction,
    assemble,
    column,
    empty_allowed,
    indicator,
    make_config,
)
from languages.vocab import BOS_ID, END_ID, PAD_ID, Vocab

DECAY = 0.5
# Thresholds of the previous-token channel (see the docstring): the current symbol's coordinate is
# >= 1, every other coordinate <= 2/3, on every prefix of a flip-flop string.
_CUR = 5.0 / 6.0


def flipflop(p: float = 0.8, *, dtype: str = "float32") -> Construction:
    """Flip-flop language modelling exactly, at every length (Liu et al. 2023; Sarrof et al. 2024).

    Layer 0 -- previous-token channel, state size V (one coordinate per token id): gate 1/2, input
    onehot(x_t) (PAD: gate 1, input 0, a no-op), so ``h^0_t = onehot(x_t) + h^0_{t-1} / 2``. In a
    flip-flop string instructions and bits alternate, so a symbol never occurs at two consecutive
    positions; hence each coordinate is at most 1 + 1/4 + 1/16 + ... = 4/3, the current symbol's
    coordinate is >= 1 and every other coordinate is <= 2/3. The previous symbol is the coordinate
    of ``2 (h^0_t - onehot(x_t)) = h^0_{t-1}`` that is >= 1 (others <= 2/3): read with threshold 5/6, so
    the channel is exact at every length and precision. (On arbitrary strings with runs of one symbol
    the 1/2 channel can tie; the theory's alternative is Mamba's convolution.)

    Layer 1 -- set/reset memory, state size 1: when the previous token is ``w`` and x_t is a bit: gate 0,
    input +1 for '1' and -1 for '0'; otherwise gate 1, input 0. So ``h^1_t`` is +1 / -1 for the bit of
    the most recent completed write, 0 before any.

    Readout at position t, from the current symbol (layer 0) and the memory (layer 1): after BOS only
    ``w``; after ``w`` or ``i`` either bit; after ``r`` only the stored bit; after a bit any instruction
    and END (a complete instruction/bit sequence is a member). ``p`` only selects the language object
    (the construction does not depend on it). Decoders: ``stored`` (0/1, -1 before any write),
    ``current`` (token id read last).
    """
    language = languages.get("flipflop", p=p)
    vocab = Vocab(language.alphabet)
    V = vocab.size
    w, r, i, zero, one = column(vocab, ["w", "r", "i", "0", "1"])
    cfg = make_config(language, "flipflop", [V, 1], dtype)
    keep_pad = indicator(V, [PAD_ID])
    bitcode = indicator(V, [zero, one], [-1.0, 1.0])
    is_bit = indicator(V, [zero, one])

    def a0(u: Tensor) -> Tensor:
        x = cfg.split(u)[0]
        return DECAY + (1.0 - DECAY) * (x @ keep_pad.to(u))[..., None].expand(-1, -1, V)

    def b0(u: Tensor) -> Tensor:
        x = cfg.split(u)[0]
        return x * (1.0 - keep_pad.to(u))

    def _write(u: Tensor) -> Tensor:  # [B, L, 1]: previous token is w and this one is a bit
        x, h0 = cfg.split(u)[:2]
        prev_w = (h0[..., w] - x[..., w]) / DECAY > _CUR
        return (prev_w.to(u) * (x @ is_bit.to(u)))[..., None]

    def a1(u: Tensor) -> Tensor:
        return 1.0 - _write(u)

    def b1(u: Tensor) -> Tensor:
        x = cfg.split(u)[0]
        return _write(u) * (x @ bitcode.to(u))[..., None]

    def current(states) -> Tensor:
        return (states[0] > _CUR).long().argmax(-1)

    def stored(states) -> Tensor:
        m = states[1][..., 0]
        return torch.where(m > 0.5, 1, torch.where(m < -0.5, 0, -1))

    def readout(states) -> Tensor:
        cur, bit = current(states), stored(states)
        out = empty_allowed(states[0], V)
        after_bos = cur == BOS_ID
        after_data = (cur == zero) | (cur == one)
        out[..., w] = after_bos | after_data
        out[..., r] = after_data
        out[..., i] = after_data
        free = (cur == w) | (cur == i)
        out[..., zero] = free | ((cur == r) & (bit == 0))
        out[..., one] = free | ((cur == r) & (bit == 1))
        out[..., END_ID] = after_data
        return out

    model = assemble(cfg, [(a0, b0), (a1, b1)], readout)
    return Construction(
        name="flipflop",
        language=language,
        model=model,
        readout=readout,
        decoders={"stored": stored, "current": current},
        description=f"flip-flop: previous-token channel ({V}) + set/reset memory (1)",
    )
