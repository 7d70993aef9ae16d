"""The flip-flop and Dyck(K, h) constructions realized as :class:`hooks.mamba.HookedMamba` weights.

Same architecture as the trained models (embedding, pre-RMSNorm residual blocks with Mamba-1 mixers,
final RMSNorm, untied LM head; non-negative gates ``a = exp(Δ A)``), every weight set by hand. The
theory's gates 0 and 1 are reached through Δ: a *reset* channel has A = -1 and
``Δ = softplus(λ (signal - 1/2))`` with λ = 60, so Δ = 30 (gate e^-30 ≈ 1e-13) when the signal is 1 and
Δ = e^-30 (gate 1 - 1e-13, exactly 1.0 in float32 and float64) when it is 0; a *counter* channel has
A = -e^-40, so its gate is exactly 1.0 in floating point whatever Δ. SiLU(s·v) with s = 30 is used as
a ReLU (exact to ~1e-12 at integer v). Position-wise features that the diagonal constructions compute
with thresholds are built from the conv (previous token), SiLU "hats" and the SiLU(z) output gate.

Token features are read after the block's RMSNorm. Embeddings are one-hot rows, so the first norm
scales every token alike (gain ``g = (1/D + eps)^-1/2``); layer outputs are written into the residual
with a small scale (1e-3) so that later norms change by < 1e-4 relative. The logits' signs are the
allowed sets: flip-flop's are ±10; Dyck's are ±10 at the decision boundary and grow with the
distance from it (e.g. an open bracket at depth 0: +190), scaled a little by the final norm.

* :func:`flipflop_mamba` -- ONE layer (the conv supplies the previous token, the flip-flop
  construction's "or Mamba's conv"): channels CONST, PREV_W (conv tap t-1), ONE, ZERO, MEM. MEM resets (Δ = 30) when
  the previous token is ``w`` and writes Δ·B·x = ±1 (B = ±const on '1' / '0'); otherwise it keeps
  (gate 1). Output ``MEM · SiLU(z)`` with z on ``r`` puts ``1e-3 stored · [last = r]`` in the residual; the
  head reads it and the token. d_model = V + 1 = 9, d_inner = 9 (5 used), d_state = 1, dt_rank = 1.
* :func:`dyck_mamba` -- TWO layers (the Dyck(K, h) construction). Layer 0: a counter channel (gate 1, input
  ±1 through a signed B on open / close) writes depth·1e-3 into the residual. Layer 1: channels
  R_j = SiLU(s (depth - j)) ≈ s·ReLU(depth - j), j = 0..h+1, give hat_d(depth) = [depth = d] as
  (R_{d-1} - 2 R_d + R_{d+1}) / s; the rank-h Δ path sets Δ = softplus(λ (hat_d + [open] - 3/2)) for
  the memory channels of block d (reset exactly at an open bracket reaching depth d). Each block holds
  ⌈log2 K⌉ + 1 bits (a "valid" bit and the binary code of the bracket type), each bit in 3 channel
  copies whose output gates SiLU(z) ≈ s ReLU(depth - j) for j = d-1, d, d+1 combine (+1, -2, +1) into
  bit · hat_d(depth): the residual receives the top's bits. Head: open iff depth < h, END iff
  depth = 0, close k iff the top's bits match k (the valid bit makes depth 0 allow none). For
  Dyck(8, 10): d_model = 2K + 3 + 1 + 4 = 24, d_inner = 144 (134 used), d_state = 1, dt_rank = 10.

Decoders read the ssm states (``blocks.{l}.mixer.hook_ssm_state``, ``[B, L, E, N]``): ``stored``
(flip-flop), ``depth`` and ``top`` (Dyck).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

import languages
from hooks.constructions._core import Construction, column
from hooks.mamba import HookedMamba, MambaConfig
from languages.vocab import BOS_ID, END_ID, PAD_ID, Vocab

S = 30.0  # SiLU(S v) ≈ S ReLU(v)
LAM = 60.0  # Δ = softplus(LAM (signal - 1/2)): 30 or e^-30
KAPPA = 1e-3  # scale of layer outputs in the residual
A_LOG_COUNTER = -40.0  # A = -e^-40: gate exactly 1


def _silu(v: float) -> float:
    return float(F.silu(torch.tensor(v, dtype=torch.float64)))


def _softplus(v: float) -> float:
    return float(F.softplus(torch.tensor(v, dtype=torch.float64)))


def _blank(cfg):
    """A HookedMamba with every weight zero and the norms at 1 (A = -1, D = 0, Δ = softplus(0))."""
    model = HookedMamba(cfg, seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0 if name.endswith("norm.weight") or name == "norm_f.weight" else 0.0)
    return model


def _gain(D: int, eps: float) -> float:
    """RMSNorm's factor on a one-hot row."""
    return (1.0 / D + eps) ** -0.5


def flipflop_symbols(p: float):
    """``(language, vocab, (w, r, i, 0, 1) token ids)`` of FFL(p) for both Mamba constructions."""
    language = languages.get("flipflop", p=p)
    vocab = Vocab(language.alphabet)
    return language, vocab, tuple(column(vocab, ["w", "r", "i", "0", "1"]))


def flipflop_mamba(p: float = 0.8) -> Construction:
    """Flip-flop as a one-layer HookedMamba with hand-set weights (see the module docstring)."""
    language, vocab, (w, r, i, zero, one) = flipflop_symbols(p)
    V = vocab.size
    READ = V
    D = V + 1
    cfg = MambaConfig(d_model=D, n_layers=1, vocab_size=V, d_state=1, d_conv=4, expand=1, dt_rank=1,
                      tie_embeddings=False, rescale_prenorm_residual=False)
    model = _blank(cfg)
    E, K = cfg.d_inner, cfg.d_conv
    g = _gain(D, cfg.norm_eps)
    CONST, PREV_W, ONE, ZERO, MEM = range(5)
    k0 = _silu(1.0)
    d_write = _softplus(LAM / 2)
    with torch.no_grad():
        model.embed.weight[:, :V] = torch.eye(V)
        mx = model.blocks[0].mixer
        Win, conv, cb = mx.in_proj.weight, mx.conv1d.weight, mx.conv1d.bias
        cb[CONST] = 1.0
        cb[MEM] = 1.0
        Win[PREV_W, w] = 1.0 / g
        conv[PREV_W, 0, K - 2] = S  # tap t-1
        cb[PREV_W] = -S / 2  # SiLU(S([prev = w] - 1/2)) ≈ (S/2) [prev = w]
        for ch, tok in ((ONE, one), (ZERO, zero)):
            Win[ch, tok] = 1.0 / g
            conv[ch, 0, K - 1] = S
        xp = mx.x_proj.weight  # rows: dt_low (1), B (1), C (1)
        xp[0, PREV_W] = 1.0 / _silu(S / 2)  # dt_low = [prev = w]
        s_bit = _silu(S)
        xp[1, ONE] = 1.0 / (d_write * s_bit * k0)  # B: ±1 / (Δ_write x_MEM)
        xp[1, ZERO] = -1.0 / (d_write * s_bit * k0)
        xp[2, CONST] = 1.0 / k0  # C = 1
        mx.dt_proj.weight[MEM, 0] = LAM
        mx.dt_proj.bias[MEM] = -LAM / 2
        Win[E + MEM, r] = S / g  # z: SiLU(z) = SiLU(S) after r, 0 otherwise
        mx.out_proj.weight[READ, MEM] = KAPPA / s_bit  # residual READ = 1e-3 stored (±1) after r
        _flipflop_head(model.lm_head.weight, V, g, READ, (w, r, i, zero, one))

    def stored(states) -> Tensor:
        m = states[0][..., MEM, 0]
        return torch.where(m > 0.5, 1, torch.where(m < -0.5, 0, -1))

    return Construction("flipflop (HookedMamba)", language, model, None, {"stored": stored},
                        "flip-flop as a 1-layer HookedMamba: conv previous token + reset channel")


def _flipflop_head(H: Tensor, V: int, g: float, READ: int, cols) -> None:
    """The flip-flop head (shared with :mod:`hooks.constructions.as_mamba2`): from the token and
    ``READ`` = κ stored (±1) after ``r``, logits ±10 / g: instructions and END after a bit (``w`` also
    after BOS), either bit after ``w`` and ``i``, the stored bit after ``r``."""
    w, r, i, zero, one = cols
    Lg = 10.0 / g
    H.fill_(0.0)
    H[:, :V] = -Lg
    H[w, [BOS_ID, zero, one]] = Lg
    for col in (r, i, END_ID):
        H[col, [zero, one]] = Lg
    for col, sign in ((zero, -1.0), (one, 1.0)):
        H[col, [w, i]] = Lg
        H[col, r] = 0.0
        H[col, READ] = sign * Lg / KAPPA


def dyck_symbols(K: int, h: int):
    """``(language, vocab, opens, closes, nb)`` of Dyck(K, h) for both Mamba constructions: the token ids of
    the K opening and closing brackets (pair k at index k) and nb = ceil(log2 K) (>= 1) code bits."""
    language = languages.get("dyck", K=K, h=h)
    vocab = Vocab(language.alphabet)
    pairs = list(language.pairs)
    opens = column(vocab, [o for o, _ in pairs])
    closes = column(vocab, [c for _, c in pairs])
    return language, vocab, opens, closes, max(1, math.ceil(math.log2(K)))


def dyck_mamba(K: int = 8, h: int = 10) -> Construction:
    """Dyck(K, h) as a two-layer HookedMamba with hand-set weights (see the module docstring)."""
    language, vocab, opens, closes, nb = dyck_symbols(K, h)
    V = vocab.size
    nq = nb + 1  # valid bit + code bits
    DEP, TOP = V, V + 1
    D = V + 1 + nq
    CONST, OPEN, CLOSE, DEPTH = 0, 1, 2, 3  # layer 0 channels

    def R(j):  # layer 1 ReLU channels, j = 0..h+1
        return 2 + j

    def MEM(d, q, c):  # layer 1 memory: block d (1..h), bit q (0 = valid), copy c (0..2)
        return 2 + (h + 2) + ((d - 1) * nq + q) * 3 + c

    E_needed = MEM(h, nq - 1, 2) + 1
    expand = math.ceil(E_needed / D)
    cfg = MambaConfig(d_model=D, n_layers=2, vocab_size=V, d_state=1, d_conv=4, expand=expand,
                      dt_rank=h, tie_embeddings=False, rescale_prenorm_residual=False)
    model = _blank(cfg)
    E, Kc = cfg.d_inner, cfg.d_conv
    g = _gain(D, cfg.norm_eps)
    k0, s1 = _silu(1.0), _silu(S)
    codes = {opens[k]: [1] + [(k >> b) & 1 for b in range(nb)] for k in range(K)}
    with torch.no_grad():
        model.embed.weight[:, :V] = torch.eye(V)
        # ---- layer 0: depth counter
        mx = model.blocks[0].mixer
        Win, conv, cb, xp = mx.in_proj.weight, mx.conv1d.weight, mx.conv1d.bias, mx.x_proj.weight
        R0 = cfg.dt_rank
        cb[CONST] = 1.0
        cb[DEPTH] = 1.0
        for ch, toks in ((OPEN, opens), (CLOSE, closes)):
            Win[ch, toks] = 1.0 / g
            conv[ch, 0, Kc - 1] = S
        mx.A_log[DEPTH] = A_LOG_COUNTER
        mx.dt_proj.bias[DEPTH] = float(torch.log(torch.expm1(torch.tensor(1.0, dtype=torch.float64))))
        d1 = _softplus(float(mx.dt_proj.bias[DEPTH]))
        xp[R0, OPEN] = 1.0 / (d1 * s1 * k0)  # B = ±1 / (Δ x_DEPTH)
        xp[R0, CLOSE] = -1.0 / (d1 * s1 * k0)
        xp[R0 + 1, CONST] = 1.0 / k0  # C = 1
        Win[E + DEPTH, :V] = 1.0 / g  # z = 1 for every token
        mx.out_proj.weight[DEP, DEPTH] = KAPPA / k0  # residual DEP = 1e-3 depth
        # ---- layer 1: memory blocks
        mx = model.blocks[1].mixer
        Win, conv, cb, xp = mx.in_proj.weight, mx.conv1d.weight, mx.conv1d.bias, mx.x_proj.weight
        cb[CONST] = 1.0
        Win[OPEN, opens] = 1.0 / g
        conv[OPEN, 0, Kc - 1] = S
        for j in range(h + 2):
            Win[R(j), DEP] = 1.0 / (g * KAPPA)  # x = depth
            conv[R(j), 0, Kc - 1] = S
            cb[R(j)] = -S * j  # xc = SiLU(S (depth - j))
        for d in range(1, h + 1):  # dt_low[d-1] = hat_d(depth) + [open]
            xp[d - 1, R(d - 1)] += 1.0 / S
            xp[d - 1, R(d)] += -2.0 / S
            xp[d - 1, R(d + 1)] += 1.0 / S
            xp[d - 1, OPEN] = 1.0 / s1
        d_write = _softplus(LAM / 2)
        xp[R0, CONST] = 1.0 / (d_write * k0 * s1)  # B: a write stores code bit (x = s1 code)
        xp[R0 + 1, CONST] = 1.0 / k0  # C = 1
        coef = (1.0, -2.0, 1.0)
        for d in range(1, h + 1):
            for q in range(nq):
                for c in range(3):
                    e = MEM(d, q, c)
                    for tok, code in codes.items():
                        Win[e, tok] = code[q] / g
                    conv[e, 0, Kc - 1] = S
                    mx.dt_proj.weight[e, d - 1] = LAM
                    mx.dt_proj.bias[e] = -1.5 * LAM
                    jc = d - 1 + c  # output gate ≈ S ReLU(depth - jc)
                    Win[E + e, DEP] = S / (g * KAPPA)
                    Win[E + e, :V] = -S * jc / g
                    mx.out_proj.weight[TOP + q, e] = coef[c] * KAPPA / S
        # ---- head: open iff depth < h; END iff depth = 0; close k iff the top's bits spell k
        H = model.lm_head.weight
        Lg = 20.0 / g  # margins of 1/2 in depth / bit units: logits ±10 at the decision boundary
        H.fill_(0.0)
        H[[PAD_ID, BOS_ID], :V] = -Lg / 2
        for col in opens:
            H[col, :V] = Lg * (h - 0.5)
            H[col, DEP] = -Lg / KAPPA
        H[END_ID, :V] = Lg * 0.5
        H[END_ID, DEP] = -Lg / KAPPA
        for k, col in enumerate(closes):
            code = codes[opens[k]]
            zeros = [q for q in range(nq) if code[q] == 0]
            H[col, :V] = Lg * (len(zeros) - nq + 0.5)
            for q in range(nq):
                H[col, TOP + q] = (Lg if code[q] else -Lg) / KAPPA

    def depth(states) -> Tensor:
        return torch.round(states[0][..., DEPTH, 0]).long()

    def top(states) -> Tensor:
        dep = depth(states)
        hs = states[1][..., 0]  # [B, L, E]
        idx = torch.tensor([[MEM(d, q, 0) for q in range(nq)] for d in range(1, h + 1)])  # [h, nq]
        bits = hs[..., idx] > 0.5  # [B, L, h, nq]
        pick = (dep - 1).clamp(0, h - 1)
        sel = torch.gather(bits, 2, pick[..., None, None].expand(-1, -1, 1, nq))[:, :, 0]  # [B, L, nq]
        k = sum(sel[..., 1 + b].long() << b for b in range(nb))
        return torch.where(dep >= 1, k, torch.full_like(k, -1))

    return Construction(f"dyck(K={K}, h={h}) (HookedMamba)", language, model, None,
                        {"depth": depth, "top": top},
                        f"Dyck({K},{h}) as a 2-layer HookedMamba: counter + {h} blocks x {nq} bits x 3 copies")
