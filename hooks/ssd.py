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
import torch.nn.functional as F
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
    """``y_t = h_t C_t (+ D x_t)``: :func:`hooks.scan.readout` with each head reading its group's ``C``."""
    return _scan.readout(h, _heads_of(Cm, h.shape[2]), x, None if D is None else D[:, None])


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


def ssd_states(
    x: Float[Tensor, "B L H P"],
    delta: Float[Tensor, "B L H"],
    a: Float[Tensor, "B L H"],
    Bm: Float[Tensor, "B L G N"],
    h0: Optional[Float[Tensor, "B H P N"]] = None,
) -> Float[Tensor, "B L H P N"]:
    """Every step's state ``h_t = a_t h_{t-1} + Δ_t x_t ⊗ B_t`` [B, L, H, P, N] (what ``hook_ssm_state``
    shows), written step by step into one output without forming ``b = Δ x ⊗ B`` at full size;
    differentiable (backward: the reverse recurrence ``g_t = dh_t + a_{t+1} g_{t+1}``)."""
    H = x.shape[2]
    if H % Bm.shape[2]:
        raise ValueError(f"heads ({H}) must be a multiple of groups ({Bm.shape[2]})")
    return _SSDStates.apply(a, delta.unsqueeze(-1) * x, Bm, h0)


class _SSDStates(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, X, Bm, h0):
        ctx.set_materialize_grads(False)
        Bs, L, H, P = X.shape
        G, N = Bm.shape[2], Bm.shape[3]
        r = H // G
        h = _scan._empty((Bs, L, H, P, N), X)
        hv = h.view(Bs, L, G, r, P, N).unbind(1)
        av = a.reshape(Bs, L, G, r, 1, 1).unbind(1)
        xv = X.reshape(Bs, L, G, r, P, 1).unbind(1)
        bv = Bm.reshape(Bs, L, G, 1, 1, N).unbind(1)
        prev = None if h0 is None else h0.view(Bs, G, r, P, N)
        for t in range(L):
            if prev is None:
                torch.mul(xv[t], bv[t], out=hv[t])
            else:
                torch.mul(prev, av[t], out=hv[t]).addcmul_(xv[t], bv[t])
            prev = hv[t]
        ctx.save_for_backward(a, X, Bm, h0, h)
        return h

    @staticmethod
    def backward(ctx, dh):
        a, X, Bm, h0, h = ctx.saved_tensors
        if dh is None:
            return None, None, None, None
        Bs, L, H, P = X.shape
        G, N = Bm.shape[2], Bm.shape[3]
        r = H // G
        g = _scan._empty(h.shape, h)  # g_t = dL/dh_t, the total derivative
        gs, dhs, as_ = g.unbind(1), dh.unbind(1), a[..., None, None].unbind(1)
        gs[L - 1].copy_(dhs[L - 1])
        for t in range(L - 2, -1, -1):
            torch.addcmul(dhs[t], as_[t + 1], gs[t + 1], out=gs[t])
        gv = g.view(Bs, L, G, r * P, N)
        gX = torch.matmul(gv, Bm.unsqueeze(-1)).view(Bs, L, H, P)
        gB = torch.matmul(X.reshape(Bs, L, G, 1, r * P), gv).view(Bs, L, G, N)
        ga = a.new_zeros(Bs, L, H)
        if L > 1:  # grad a_t = <g_t, h_{t-1}>
            ga[:, 1:] = torch.matmul(g[:, 1:].reshape(Bs, L - 1, H, 1, P * N),
                                     h[:, :-1].reshape(Bs, L - 1, H, P * N, 1)).view(Bs, L - 1, H)
        gh0 = None
        if h0 is not None:
            ga[:, 0] = (gs[0] * h0).sum((-1, -2))
            gh0 = gs[0] * as_[0] if ctx.needs_input_grad[3] else None
        return ga, gX, gB, gh0

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
        xdt = F.pad(xdt, (0, 0, 0, 0, 0, pad))
        la = F.pad(la, (0, 0, 0, pad))
        Bm = F.pad(Bm, (0, 0, 0, 0, 0, pad))
        Cm = F.pad(Cm, (0, 0, 0, 0, 0, pad))
        if sign is not None:
            sign = F.pad(sign, (0, 0, 0, pad), value=1.0)
    c = (L + pad) // Q
    # [B, G, r, c, Q(, P)] / [B, G, c, Q, N]: heads split as (group, head-in-group)
    X = xdt.view(Bs, c, Q, G, r, P).permute(0, 3, 4, 1, 2, 5)
    Bc = Bm.reshape(Bs, c, Q, G, N).permute(0, 3, 1, 2, 4)
    Cc = Cm.reshape(Bs, c, Q, G, N).permute(0, 3, 1, 2, 4)
    lac = la.view(Bs, c, Q, G, r).permute(0, 3, 4, 1, 2)
    sg = None
    if sign is not None:  # Π_{k<=i} sign(a_k) within the chunk: ±1 exactly, no gradient
        sg = torch.cumprod(sign.detach().reshape(Bs, c, Q, G, r).permute(0, 3, 4, 1, 2), dim=-1)
    init = None if h0 is None else h0.view(Bs, G, r, P, N)
    y, last = _SSDChunks.apply(X, lac, sg, Bc, Cc, init)
    y = y.permute(0, 3, 4, 1, 2, 5).reshape(Bs, c * Q, H, P)[:, :L]
    if D is not None:
        y = y + x * D[:, None]
    return y, last.reshape(Bs, H, P, N)


class _SSDChunks(torch.autograd.Function):
    """The chunked scan's core with a hand-written backward (autograd through its many [.., Q, Q]
    temporaries cost several times the arithmetic). Shapes: ``X`` (= Δ x) [B, G, r, c, Q, P], ``la``
    (log |a|) and ``sg`` (cumulative sign or None) [B, G, r, c, Q], ``Bc``/``Cc`` [B, G, c, Q, N],
    ``init`` [B, G, r, P, N] or None. Returns ``y`` [B, G, r, c, Q, P] (without the D skip) and the
    last state [B, G, r, P, N]. Notation of the module doc: ``Dk[i, j]`` = Π_{j<k<=i} a_k (0 for j > i),
    ``st[i]`` = Π_{k<=i} a_k, ``E_c`` the state at the end of chunk c."""

    @staticmethod
    def forward(ctx, X, la, sg, Bc, Cc, init):
        ctx.set_materialize_grads(False)
        X, Bc, Cc = X.contiguous(), Bc.contiguous(), Cc.contiguous()
        Bs, G, r, c, Q, P = X.shape
        N = Bc.shape[-1]
        cs = torch.cumsum(la.double(), dim=-1)  # float64: a pair's difference loses nothing
        Dk = (cs.unsqueeze(-1) - cs.unsqueeze(-2)).to(X.dtype).exp_()
        Dk.masked_fill_(~torch.ones(Q, Q, dtype=torch.bool, device=X.device).tril(), 0.0)
        st = cs.to(X.dtype).exp_()
        if sg is not None:
            Dk.mul_(sg.unsqueeze(-1) * sg.unsqueeze(-2))
            st.mul_(sg)
        CB = torch.matmul(Cc, Bc.transpose(-1, -2))  # [B, G, c, Q, Q]
        M = Dk * CB.unsqueeze(2)
        y = torch.matmul(M, X)  # within chunks
        w = Dk[..., -1, :]  # Π_{j<k<=Q-1} a_k: weight of step j in its chunk's end state
        Xw = (X * w.unsqueeze(-1)).permute(0, 1, 3, 4, 2, 5).reshape(Bs, G, c, Q, r * P)
        S = torch.matmul(Xw.transpose(-1, -2), Bc)  # [B, G, c, rP, N]: each chunk's own end state
        total = st[..., -1].permute(0, 1, 3, 2)  # [B, G, c, r]
        E = torch.empty_like(S)  # E_c = total_c E_{c-1} + S_c
        Ev, tv = E.view(Bs, G, c, r, P, N), total[..., None, None]
        prev = None if init is None else init
        for k in range(c):
            if prev is None:
                Ev[:, :, k].copy_(S.view(Bs, G, c, r, P, N)[:, :, k])
            else:
                torch.addcmul(S.view(Bs, G, c, r, P, N)[:, :, k], tv[:, :, k], prev, out=Ev[:, :, k])
            prev = Ev[:, :, k]
        starts = torch.cat([(init.reshape(Bs, G, 1, r * P, N) if init is not None else E.new_zeros(Bs, G, 1, r * P, N)),
                            E[:, :, :-1]], dim=2)  # [B, G, c, rP, N]: state carried into each chunk
        U = torch.matmul(Cc, starts.transpose(-1, -2)).view(Bs, G, c, Q, r, P).permute(0, 1, 4, 2, 3, 5)
        y.addcmul_(U, st.unsqueeze(-1))
        ctx.save_for_backward(X, Bc, Cc, init, Dk, M, st, starts, E, U)
        ctx.has_sign = sg is not None
        return y, E.view(Bs, G, c, r, P, N)[:, :, -1]

    @staticmethod
    def backward(ctx, dy, dlast):
        X, Bc, Cc, init, Dk, M, st, starts, E, U = ctx.saved_tensors
        Bs, G, r, c, Q, P = X.shape
        N = Bc.shape[-1]
        if dy is None:
            dy = X.new_zeros(X.shape)
        dy = dy.contiguous()
        # carried-in part: y += st_i (C_i · starts)
        dst = (dy * U).sum(-1)  # [B, G, r, c, Q]
        dU = (dy * st.unsqueeze(-1)).permute(0, 1, 3, 4, 2, 5).reshape(Bs, G, c, Q, r * P)
        dC = torch.matmul(dU, starts)  # [B, G, c, Q, N]
        dstarts = torch.matmul(dU.transpose(-1, -2), Cc)  # [B, G, c, rP, N]
        # the recurrence over chunks, backwards: dE_c = dstarts_{c+1} + total_{c+1} dE_{c+1}
        total = st[..., -1].permute(0, 1, 3, 2)[..., None, None]  # [B, G, c, r, 1, 1]
        dE = torch.empty_like(E)
        dEv, dsv, Ev = dE.view(Bs, G, c, r, P, N), dstarts.view(Bs, G, c, r, P, N), E.view(Bs, G, c, r, P, N)
        if dlast is None:
            dEv[:, :, -1].zero_()
        else:
            dEv[:, :, -1].copy_(dlast)
        for k in range(c - 2, -1, -1):
            torch.addcmul(dsv[:, :, k + 1], total[:, :, k + 1], dEv[:, :, k + 1], out=dEv[:, :, k])
        dinit = None
        if init is not None:
            dinit = (dsv[:, :, 0] + total[:, :, 0] * dEv[:, :, 0]) if ctx.needs_input_grad[5] else None
            prev_E = torch.cat([init.unsqueeze(2), Ev[:, :, :-1]], dim=2)
        else:
            prev_E = torch.cat([Ev.new_zeros(Bs, G, 1, r, P, N), Ev[:, :, :-1]], dim=2)
        dtotal = (dEv * prev_E).sum((-1, -2)).permute(0, 1, 3, 2)  # [B, G, r, c]
        dS = dE  # [B, G, c, rP, N]
        # each chunk's end state S = (X w)^T B
        w = Dk[..., -1, :]
        Xw = (X * w.unsqueeze(-1)).permute(0, 1, 3, 4, 2, 5).reshape(Bs, G, c, Q, r * P)
        dB = torch.matmul(Xw, dS)  # [B, G, c, Q, N]
        dXw = torch.matmul(Bc, dS.transpose(-1, -2)).view(Bs, G, c, Q, r, P).permute(0, 1, 4, 2, 3, 5)
        dw = (dXw * X).sum(-1)  # [B, G, r, c, Q]
        # within chunks: y = M X with M = Dk ∘ CB
        dM = torch.matmul(dy, X.transpose(-1, -2))
        dX = torch.matmul(M.transpose(-1, -2), dy).addcmul_(dXw, w.unsqueeze(-1))
        dCB = (dM * Dk).sum(2)
        dC += torch.matmul(dCB, Bc)
        dB += torch.matmul(dCB.transpose(-1, -2), Cc)
        # log-gate: Dk[i, j] = ± exp(cs_i - cs_j), st_i = ± exp(cs_i); R = dDk ∘ Dk
        R = dM.mul_(M)
        R[..., -1, :].addcmul_(dw, w)
        dcs = R.sum(-1) - R.sum(-2)
        dcs.addcmul_(dst, st)
        dcs[..., -1] += dtotal * st[..., -1]
        dla = dcs.flip(-1).cumsum(-1).flip(-1)  # dla_k = Σ_{i>=k} dcs_i
        return dX, dla, None, dB, dC, dinit


__all__ = ["GATES", "gate_log", "gate_values", "discretize", "readout", "ssd_scan_ref", "ssd_scan", "ssd_chunked",
           "ssd_states"]
