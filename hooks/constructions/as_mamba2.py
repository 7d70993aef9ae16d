"""The flip-flop and Dyck(K, h) constructions realized as :class:`hooks.mamba2.HookedMamba2` weights.

Same architecture as the trained Mamba-2 models (embedding, pre-RMSNorm residual blocks with Mamba-2
mixers, final RMSNorm, untied LM head; non-negative gates ``a = exp(Δ A)``, one per head), every weight
set by hand. What Mamba-2 changes against :mod:`hooks.constructions.as_mamba` (Mamba-1), and how the
constructions use it:

* Δ is a linear function of the block's input (``in_proj``), not of the conv output: it can see the
  current token and the residual stream, not the previous token.
* x, B and C all pass the conv and a SiLU: a feature of the previous token goes into B (tap t-1), and a
  sign is made from ``SiLU(v) < 0`` for ``v < 0`` (SiLU's minimum is -0.278).
* The output passes a gated RMSNorm. With ``headdim = 1`` and ``n_groups = d_inner`` (every channel its
  own head, group and norm group) that norm is ``v / sqrt(v^2 + eps)``: a sign, exact to ~1e-9 when
  ``|v| >> sqrt(eps)``, and 0 when v = 0. The constructions compute signs, not magnitudes, in their
  outputs; this is also what lets a one-layer output feed thresholds of the next layer linearly.

Constants as in the Mamba-1 realizations: a *reset* head has A = -1 and ``Δ = softplus(λ (signal - 1/2))``
with λ = 60 (Δ = 30: gate e^-30; Δ = e^-30: gate exactly 1.0 in float32); a *counter* head has
A = -e^-40 (gate exactly 1.0 whatever Δ); SiLU(S v) with S = 60 is a ReLU away from 0. Layer outputs
enter the residual with scale κ = 1e-3; the logits' signs are the allowed sets (±10 at the boundary).

* :func:`flipflop_mamba2` -- ONE layer, channels MEM1 and MEM0 (memory of "the last written bit was
  1 / 0"). Both reset at ``w`` (Δ from the current token); at the next token B = [previous token = w]
  (conv tap t-1) times x = [current bit] writes 1 into the channel of that bit with gate 1. At ``r`` the
  gate SiLU(z) opens and the norm's sign puts ``κ (MEM1 - MEM0)`` in the residual. d_model = V + 1 = 9,
  d_inner = 9 (2 used), d_state = 1.
* :func:`dyck_mamba2` -- TWO layers. Layer 0: counters j = 1..h+1, ``h_j = c b (depth - j + 1/2)``
  (x = ±c on open / close, B = b, and on BOS B = -(j - 1/2) b sets the offset); the output norm's sign
  puts ``s_j = sign(depth - j + 1/2)`` (i.e. ±[depth >= j]) in the residual. Then
  ``hat_d = (s_d - s_{d+1}) / 2 = [depth = d]`` is linear in the next layer's input. Layer 1: block d
  (d = 1..h) holds the ⌈log2 K⌉ code bits of the bracket opened at depth d as ±1, reset and written
  when ``hat_d + [open] = 2`` (Δ = softplus(λ (hat_d + [open] - 3/2))); its output gate SiLU(z) with
  z ∝ hat_d - 1/2 is open only at the current depth, so the residual receives the top's code (±1 per
  bit; 0 at depth 0). Head: open iff s_h < 0, END iff s_1 < 0, close k iff the top's bits spell k.
  For Dyck(8, 10): d_model = V + (h + 1) + 3 = 33, d_inner = 33 (11 + 30 used), d_state = 1.

Decoders read ``blocks.{l}.mixer.hook_ssm_state`` (``[B, L, H, 1, 1]``): ``stored`` (flip-flop; -1 at a
``w``, where the memory has been cleared for the coming bit, and before the first write), ``depth`` and
``top`` (Dyck).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from hooks.constructions._core import Construction
from hooks.constructions.as_mamba import (A_LOG_COUNTER, KAPPA, LAM, _flipflop_head, _gain, _silu, _softplus,
                                          dyck_symbols, flipflop_symbols)
from hooks.mamba2 import HookedMamba2, Mamba2Config
from languages.vocab import BOS_ID, END_ID, PAD_ID

S = 60.0  # SiLU(S (v - 1/2)) for v in {0, 1}: -2.8e-12 or 30
S_Z = 120.0  # output gates: SiLU(±60) = -5e-25 or 60


def _inv_silu(target: float, negative_branch: bool = False) -> float:
    """v with SiLU(v) = target (float64 bisection). ``negative_branch``: the root in [-1.278, 0] of a
    negative target (SiLU is decreasing below -1.278)."""
    lo, hi = (-1.2784645, 0.0) if negative_branch else (-1.2784645, max(1.0, abs(target) + 2.0))
    if not _silu(lo) <= target <= _silu(hi):
        raise ValueError(f"SiLU does not reach {target} on [{lo}, {hi}]")
    for _ in range(200):
        mid = (lo + hi) / 2
        if _silu(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _blank(cfg):
    """A HookedMamba2 with every weight zero and the norms at 1 (A = -1, D = 0, Δ = softplus(0))."""
    model = HookedMamba2(cfg, seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0 if name.endswith("norm.weight") or name == "norm_f.weight" else 0.0)
    return model


class _Rows:
    """Row / channel indices of one mixer with headdim 1, d_state 1 and one group per channel."""

    def __init__(self, mixer):
        E = mixer.cfg.d_inner
        self.E, self.K = E, mixer.cfg.d_conv
        self.W, self.cw, self.cb = mixer.in_proj.weight, mixer.conv1d.weight, mixer.conv1d.bias

    def z(self, e):
        return e

    def x(self, e):  # in_proj row; the conv channel is x(e) - E
        return self.E + e

    def B(self, e):
        return 2 * self.E + e

    def C(self, e):
        return 3 * self.E + e

    def dt(self, e):
        return 4 * self.E + e

    def conv(self, row, tap, weight, bias=None):
        """Conv channel of in_proj row ``row`` (x, B or C): ``tap`` 0 = current token, 1 = previous."""
        ch = row - self.E
        self.cw[ch, 0, self.K - 1 - tap] = weight
        if bias is not None:
            self.cb[ch] = bias


def _config(d_model: int, n_layers: int, vocab_size: int, d_inner: int):
    expand = math.ceil(d_inner / d_model)
    E = expand * d_model
    return Mamba2Config(d_model=d_model, n_layers=n_layers, vocab_size=vocab_size, d_state=1, d_conv=4,
                        expand=expand, headdim=1, n_groups=E, chunk_size=64, tie_embeddings=False,
                        rescale_prenorm_residual=False)


def flipflop_mamba2(p: float = 0.8) -> Construction:
    """Flip-flop as a one-layer HookedMamba2 with hand-set weights (see the module docstring)."""
    language, vocab, (w, r, i, zero, one) = flipflop_symbols(p)
    V = vocab.size
    READ = V
    D = V + 1
    cfg = _config(D, 1, V, 2)
    model = _blank(cfg)
    g = _gain(D, cfg.norm_eps)
    MEM1, MEM0 = 0, 1
    d_keep = _softplus(-LAM / 2)  # Δ at the write step (gate 1)
    x_on = _silu(S / 2)
    b_on = 1.0 / (d_keep * x_on)  # Δ x B = 1 at a write
    with torch.no_grad():
        model.embed.weight[:, :V] = torch.eye(V)
        mx = model.blocks[0].mixer
        rw = _Rows(mx)
        W = rw.W
        for e, bit in ((MEM1, one), (MEM0, zero)):
            W[rw.dt(e), w] = LAM / g  # reset at w
            mx.dt_bias[e] = -LAM / 2
            W[rw.x(e), bit] = 1.0 / g  # x = SiLU(S ([bit] - 1/2))
            rw.conv(rw.x(e), 0, S, -S / 2)
            W[rw.B(e), w] = 1.0 / g  # B = SiLU(W [previous = w] - S): b_on or ~0
            rw.conv(rw.B(e), 1, b_on + S, -S)
            rw.conv(rw.C(e), 0, 0.0, _inv_silu(1.0))  # C = 1
            W[rw.z(e), :V] = -S_Z / 2 / g  # z = ±S_Z / 2: the output opens at r
            W[rw.z(e), r] = S_Z / 2 / g
        mx.out_proj.weight[READ, MEM1] = KAPPA
        mx.out_proj.weight[READ, MEM0] = -KAPPA
        _flipflop_head(model.lm_head.weight, V, g, READ, (w, r, i, zero, one))

    def stored(states) -> Tensor:
        h = states[0][..., 0, 0]  # [B, L, H]
        return torch.where(h[..., MEM1] > 0.5, 1, torch.where(h[..., MEM0] > 0.5, 0, -1))

    return Construction("flipflop (HookedMamba2)", language, model, None, {"stored": stored},
                        "flip-flop as a 1-layer HookedMamba2: reset at w, write B=[prev w] x bit, sign readout at r")


def dyck_mamba2(K: int = 8, h: int = 10) -> Construction:
    """Dyck(K, h) as a two-layer HookedMamba2 with hand-set weights (see the module docstring)."""
    language, vocab, opens, closes, nb = dyck_symbols(K, h)
    V = vocab.size
    STEP0 = V  # residual s_j at STEP0 + j - 1, j = 1..h+1
    TOP0 = V + h + 1  # residual top bits at TOP0 + q
    D = V + h + 1 + nb

    def MEM(d, q):  # layer 1 head of block d (1..h), bit q
        return (d - 1) * nb + q

    cfg = _config(D, 2, V, max(h + 1, h * nb))
    model = _blank(cfg)
    eps = cfg.norm_eps
    g0 = _gain(D, eps)
    g1 = ((1.0 + KAPPA**2 * (h + 1)) / D + eps) ** -0.5  # layer 1's input: one-hot + κ (±1) x (h+1)
    c = -_silu(-1.0)  # x = ±c
    v_plus = _inv_silu(c)
    b_step = 0.26 / (h + 0.5)  # B per bracket; BOS offsets -(j - 1/2) b_step >= -0.26 stay in SiLU's range
    codes = {opens[k]: [1.0 if (k >> q) & 1 else -1.0 for q in range(nb)] for k in range(K)}
    with torch.no_grad():
        model.embed.weight[:, :V] = torch.eye(V)
        # ---- layer 0: counters j = 1..h+1 with offsets, output sign(depth - j + 1/2)
        mx = model.blocks[0].mixer
        rw = _Rows(mx)
        W = rw.W
        beta = _inv_silu(b_step)
        for j in range(1, h + 2):
            e = j - 1
            mx.A_log[e] = A_LOG_COUNTER  # gate exactly 1
            mx.dt_bias[e] = math.log(math.expm1(1.0))  # Δ = 1
            W[rw.x(e), opens + [BOS_ID]] = v_plus / g0  # x = +c on open and BOS, -c on close
            W[rw.x(e), closes] = -1.0 / g0
            rw.conv(rw.x(e), 0, 1.0, 0.0)
            off = _inv_silu(-(j - 0.5) * b_step, negative_branch=True)
            W[rw.B(e), BOS_ID] = (off - beta) / g0  # B = b_step, and -(j - 1/2) b_step on BOS
            rw.conv(rw.B(e), 0, 1.0, beta)
            rw.conv(rw.C(e), 0, 0.0, 1000.0)  # C = SiLU(1000) = 1000
            W[rw.z(e), :V] = S / 2 / g0  # SiLU(z) = 30 on every token
            mx.out_proj.weight[STEP0 + e, e] = KAPPA
        # ---- layer 1: memory blocks, reset + written at an open reaching depth d, read at depth d
        mx = model.blocks[1].mixer
        rw = _Rows(mx)
        W = rw.W
        d_write = _softplus(LAM / 2)
        beta_w = _inv_silu(1.0 / (d_write * c))  # Δ x B = ±1 at a write
        for d in range(1, h + 1):
            for q in range(nb):
                e = MEM(d, q)
                hat = torch.zeros(D)  # hat_d = (s_d - s_{d+1}) / 2 as a function of the normed input
                hat[STEP0 + d - 1] = 0.5 / (g1 * KAPPA)
                hat[STEP0 + d] = -0.5 / (g1 * KAPPA)
                ones = torch.zeros(D)
                ones[:V] = 1.0 / g1  # = 1 on every token
                is_open = torch.zeros(D)
                is_open[opens] = 1.0 / g1
                W[rw.dt(e)] = LAM * (hat + is_open - 1.5 * ones)
                for tok, code in codes.items():
                    W[rw.x(e), tok] = (v_plus if code[q] > 0 else -1.0) / g1
                rw.conv(rw.x(e), 0, 1.0, 0.0)
                rw.conv(rw.B(e), 0, 0.0, beta_w)
                rw.conv(rw.C(e), 0, 0.0, _inv_silu(1.0))  # C = 1
                W[rw.z(e)] = S_Z * (hat - 0.5 * ones)
                mx.out_proj.weight[TOP0 + q, e] = KAPPA
        # ---- head
        H = model.lm_head.weight
        gf = g1  # the final norm's gain (the top bits change it by < 1e-5 relative)
        Lg = 10.0 / gf
        H.fill_(0.0)
        H[[PAD_ID, BOS_ID], :V] = -Lg
        for col in opens:
            H[col, STEP0 + h - 1] = -Lg / KAPPA  # open iff s_h = -1 (depth < h)
        H[END_ID, STEP0] = -Lg / KAPPA  # END iff s_1 = -1 (depth 0)
        for k, col in enumerate(closes):
            H[col, :V] = -Lg * (nb - 0.5)
            for q, bit in enumerate(codes[opens[k]]):
                H[col, TOP0 + q] = bit * Lg / KAPPA

    unit = c * b_step

    def depth(states) -> Tensor:
        return torch.round(states[0][..., 0, 0, 0] / unit + 0.5).long()

    def top(states) -> Tensor:
        dep = depth(states)
        hs = states[1][..., 0, 0]  # [B, L, H]
        idx = torch.tensor([[MEM(d, q) for q in range(nb)] for d in range(1, h + 1)])  # [h, nb]
        bits = hs[..., idx] > 0  # [B, L, h, nb]
        pick = (dep - 1).clamp(0, h - 1)
        sel = torch.gather(bits, 2, pick[..., None, None].expand(-1, -1, 1, nb))[:, :, 0]
        k = sum(sel[..., q].long() << q for q in range(nb))
        return torch.where(dep >= 1, k, torch.full_like(k, -1))

    return Construction(f"dyck(K={K}, h={h}) (HookedMamba2)", language, model, None,
                        {"depth": depth, "top": top},
                        f"Dyck({K},{h}) as a 2-layer HookedMamba2: {h + 1} offset counters with sign outputs + "
                        f"{h} blocks x {nb} bits")
