"""The Mamba-2 scan (state-space duality): a sequential reference and a chunked fast path that agree.

Glossary (shapes):
    B  batch       L  pos (time)     H  heads      P  headdim      G  groups (n_groups)     N  d_state
    Q  chunk length (time steps per chunk)        c  chunk index           r = H / G heads per group

The recurrence, per head h (state ``[P, N]``, head h reads group ``g = h // r``)::

    h_t = a_t[h] h_{t-1} + Δ_t[h] x_t[h] ⊗ B_t[g]          h_{-1} = h0 (zeros by default)
    y_t[h] = h_t C_t[g] + D[h] x_t[h]

with a scalar gate per head and step (Mamba-1's differs per channel and state): ``a = exp(Δ A)`` for the
``"nonnegative"`` gate, ``2 exp(Δ A) - 1`` for ``"signed"``, ``exp(A)`` for ``"time_invariant"``
(:data:`hooks.scan.GATES`). Because the gate is one scalar per head, products of gates over a span are
scalars too, and the scan splits into chunks of Q steps (Dao & Gu 2024, SSD)::

    within a chunk:  y_i = Σ_{j<=i} (Π_{j<k<=i} a_k) (C_i · B_j) Δ_j x_j      (a masked Q×Q matmul)
    chunk end state: S_c = Σ_j (Π_{j<k<=Q-1} a_k) Δ_j x_j ⊗ B_j               (a matmul)
    across chunks:   H_c = (Π_chunk a) H_{c-1} + S_c                           (hooks.scan.linear_recurrence)
    carried in:      y_i += (Π_{k<=i} a_k) H_{c-1} C_i

Products of gates are taken as ``exp`` of sums of ``log |a|`` (cumulative sums in float64, so a pair's
difference loses nothing at any depth of decay) times the product of their signs (signed gate).

* :func:`ssd_scan_ref`: one step at a time, exactly the recurrence above; returns ``(y, h)`` with every
  step's state ``h`` [B, L, H, P, N].
* :func:`ssd_scan`: chunked; returns ``(y, h_last)`` and never builds a per-step state (differentiable
  by autograd; memory O(B L H Q) for the chunk matrices).
* :func:`discretize` / :func:`readout`: ``(a, b)`` at full state size and ``y`` from given states: what
  the model uses when a hook observes or edits ``hook_ssm_state`` (then the states are the
  :func:`hooks.scan.linear_recurrence` of ``a`` and ``b``).
"""
from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

from hooks import scan as _scan

GATES = _scan.GATES
# log|a| below this is treated as this (exp of it is 0 in float32 either way); keeps a gate of exactly
# 0 (signed) from producing -inf - -inf = NaN in the pairwise differences.
_LOG_FLOOR = -1e4


def gate_log(delta: Float[Tensor, "B L H"], A: Float[Tensor, "H"], gate: str
             ) -> tuple[Float[Tensor, "B L H"], Optional[Float[Tensor, "B L H"]]]:
    """``(log |a|, sign(a))`` of the gate without forming ``a`` first (sign None: all positive)."""
    _scan._check_gate(gate)
    if gate == "nonnegative":
        return delta * A, None
    if gate == "time_invariant":
        return A.expand_as(delta), None
    a = _scan._gate_of(delta * A, gate)
    return torch.log(a.abs()).clamp(min=_LOG_FLOOR), torch.sign(a)


def gate_values(delta: Float[Tensor, "B L H"], A: Float[Tensor, "H"], gate: str) -> Float[Tensor, "B L H"]:
    """The gate ``a`` [B, L, H] (for the time-invariant gate an expanded view of ``exp(A)``)."""
    _scan._check_gate(gate)
    if gate == "time_invariant":
        return torch.exp(A).expand_as(delta)
    return _scan._gate_of(delta * A, gate)


def _heads_of(t: Tensor, H: int) -> Tensor:
    """[B, L, G, N] -> [B, L, H, N]: each group's row for its r = H / G heads (a view when G = 1)."""
    G = t.shape[2]
    if G == H:
        return t
    if G == 1:
        return t.expand(-1, -1, H, -1)
    return t.repeat_interleave(H // G, dim=2)


def discretize(
    x: Float[Tensor, "B L H P"],
    delta: Float[Tensor, "B L H"],
    a: Float[Tensor, "B L H"],
    Bm: Float[Tensor, "B L G N"],
) -> tuple[Float[Tensor, "B L H P N"], Float[Tensor, "B L H P N"]]:
    """``(a, b)`` at state size: ``a`` an expanded view of the per-head gate, ``b = Δ x ⊗ B``."""
    H = x.shape[2]
    b = (delta.unsqueeze(-1) * x).unsqueeze(-1) * _heads_of(Bm, H).unsqueeze(3)
    return a[..., None, None].expand(b.shape), b


def readout(
    h: Float[Tensor, "B L H P N"],
    Cm: Float[Tensor, "B L G N"],
    x: Float[Tensor, "B L H P"],
    D: Optional[Float[Tensor, "H"]] = None,
) -> Float[Tensor, "B L H P"]:
    """``y_t = h_t C_t (+ D x_t)``."""
    y = torch.matmul(h, _heads_of(Cm, h.shape[2]).unsqueeze(-1)).squeeze(-1)
    if D is not None:
        y = y + x * D[:, None]
    return y


def ssd_scan_ref(
    x: Float[Tensor, "B L H P"],
    delta: Float[Tensor, "B L H"],
    A: Float[Tensor, "H"],
    Bm: Float[Tensor, "B L G N"],
    Cm: Float[Tensor, "B L G N"],
    D: Optional[Float[Tensor, "H"]] = None,
    h0: Optional[Float[Tensor, "B H P N"]] = None,
    gate: str = "nonnegative",
) -> tuple[Float[Tensor, "B L H P"], Float[Tensor, "B L H P N"]]:
    """Reference: the recurrence in the module doc, one time step at a time. Returns ``(y, h)``."""
    _scan._check_gate(gate)
    Bs, L, H, P = x.shape
    G, N = Bm.shape[2], Bm.shape[3]
    r = H // G
    h = x.new_zeros(Bs, H, P, N) if h0 is None else h0
    ys, hs = [], []
    for x_t, dt_t, B_t, C_t in zip(x.unbind(1), delta.unbind(1), Bm.unbind(1), Cm.unbind(1)):
        a = gate_values(dt_t, A, gate)  # [B, H]
        Bh = B_t.repeat_interleave(r, dim=1)  # [B, H, N]: head h reads group h // r
        Ch = C_t.repeat_interleave(r, dim=1)
        h = a[:, :, None, None] * h + (dt_t[:, :, None] * x_t)[..., None] * Bh[:, :, None, :]
        y = (h * Ch[:, :, None, :]).sum(-1)
        if D is not None:
            y = y + D[:, None] * x_t
        ys.append(y)
        hs.append(h)
    return torch.stack(ys, 1), torch.stack(hs, 1)


def ssd_scan(
    x: Float[Tensor, "B L H P"],
    delta: Float[Tensor, "B L H"],
    A: Float[Tensor, "H"],
    Bm: Float[Tensor, "B L G N"],
    Cm: Float[Tensor, "B L G N"],
    D: Optional[Float[Tensor, "H"]] = None,
    h0: Optional[Float[Tensor, "B H P N"]] = None,
    gate: str = "nonnegative",
    chunk: int = 64,
) -> tuple[Float[Tensor, "B L H P"], Float[Tensor, "B H P N"]]:
    """Chunked scan: the same ``y`` as :func:`ssd_scan_ref` (to float32 rounding) and the last state."""
    la, sign = gate_log(delta, A, gate)
    return ssd_chunked(x, delta, la, sign, Bm, Cm, D, h0, chunk)


def ssd_chunked(
    x: Float[Tensor, "B L H P"],
    delta: Float[Tensor, "B L H"],
    la: Float[Tensor, "B L H"],
    sign: Optional[Float[Tensor, "B L H"]],
    Bm: Float[Tensor, "B L G N"],
    Cm: Float[Tensor, "B L G N"],
    D: Optional[Float[Tensor, "H"]],
    h0: Optional[Float[Tensor, "B H P N"]],
    chunk: int,
) -> tuple[Float[Tensor, "B L H P"], Float[Tensor, "B H P N"]]:
    """:func:`ssd_scan` given the gate as ``log |a|`` and its sign (None: positive)."""
    Bs, L, H, P = x.shape
    G, N = Bm.shape[2], Bm.shape[3]
    if H % G:
        raise ValueError(f"heads ({H}) must be a multiple of groups ({G})")
    r = H // G
    Q = max(1, min(int(chunk), L))
    pad = (-L) % Q
    xdt = delta.unsqueeze(-1) * x
    la = la.clamp(min=_LOG_FLOOR)
    if pad:  # padded steps: gate 1, no input (the last state is unchanged by them)
        xdt = torch.nn.functional.pad(xdt, (0, 0, 0, 0, 0, pad))
        la = torch.nn.functional.pad(la, (0, 0, 0, pad))
        Bm = torch.nn.functional.pad(Bm, (0, 0, 0, 0, 0, pad))
        Cm = torch.nn.functional.pad(Cm, (0, 0, 0, 0, 0, pad))
        if sign is not None:
            sign = torch.nn.functional.pad(sign, (0, 0, 0, pad), value=1.0)
    c = (L + pad) // Q
    # [B, G, r, c, Q(, P)] / [B, G, c, Q, N]: heads split as (group, head-in-group)
    xdt = xdt.view(Bs, c, Q, G, r, P).permute(0, 3, 4, 1, 2, 5)
    Bc = Bm.view(Bs, c, Q, G, N).permute(0, 3, 1, 2, 4)
    Cc = Cm.view(Bs, c, Q, G, N).permute(0, 3, 1, 2, 4)
    lac = la.view(Bs, c, Q, G, r).permute(0, 3, 4, 1, 2)  # [B, G, r, c, Q]
    cs = torch.cumsum(lac.double(), dim=-1)  # log Π_{k<=i} |a_k| within the chunk
    seg = (cs.unsqueeze(-1) - cs.unsqueeze(-2)).to(x.dtype)  # [.., Q(i), Q(j)]: log Π_{j<k<=i} |a_k|
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    decay = torch.exp(seg.masked_fill(~causal, float("-inf")))
    start = torch.exp(cs.to(x.dtype))  # Π_{k<=i} a_k: weight of the carried-in state at step i
    to_end = decay[..., -1, :]  # Π_{j<k<=Q-1} a_k
    total = start[..., -1]  # the whole chunk's gate product
    if sign is not None:
        sg = torch.cumprod(sign.view(Bs, c, Q, G, r).permute(0, 3, 4, 1, 2), dim=-1)  # ±1, exact
        decay = decay * (sg.unsqueeze(-1) * sg.unsqueeze(-2))
        start = start * sg
        to_end = to_end * (sg[..., -1:] * sg)
        total = total * sg[..., -1]
    # within chunks: (C_i · B_j) masked by the gate products, applied to Δ x
    CB = torch.matmul(Cc, Bc.transpose(-1, -2)).unsqueeze(2)  # [B, G, 1, c, Q, Q]
    y = torch.matmul(decay * CB, xdt)  # [B, G, r, c, Q, P]
    # each chunk's contribution to its end state, then the recurrence over chunks
    S = torch.matmul((xdt * to_end.unsqueeze(-1)).transpose(-1, -2), Bc.unsqueeze(2))  # [B, G, r, c, P, N]
    S = S.permute(0, 3, 1, 2, 4, 5)  # [B, c, G, r, P, N]
    init = None if h0 is None else h0.view(Bs, G, r, P, N)
    ends = _scan.linear_recurrence(total.permute(0, 3, 1, 2)[..., None, None].expand(S.shape), S, init)
    starts = torch.cat([ends.new_zeros(Bs, 1, G, r, P, N) if init is None else init.unsqueeze(1), ends[:, :-1]], 1)
    carried = torch.matmul(Cc.unsqueeze(2), starts.permute(0, 2, 3, 1, 5, 4))  # [B, G, r, c, Q, P]
    y = y + carried * start.unsqueeze(-1)
    y = y.permute(0, 3, 4, 1, 2, 5).reshape(Bs, c * Q, H, P)[:, :L]
    if D is not None:
        y = y + x * D[:, None]
    return y, ends[:, -1].reshape(Bs, H, P, N)


__all__ = ["GATES", "gate_log", "gate_values", "discretize", "readout", "ssd_scan_ref", "ssd_scan", "ssd_chunked"]
