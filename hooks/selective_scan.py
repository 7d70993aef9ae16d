"""Mamba-1's selective scan: a slow, obviously-correct reference and a fused fast path that agree.

Glossary (shapes):
    B  batch          L  pos (time)       E  d_inner (channels)      N  d_state

The recurrence and gates are :mod:`hooks.scan`'s (``h_t = a_t ∘ h_{t-1} + Δ_t B_t x_t``, ``y_t = C_t h_t +
D ∘ x_t``; ``a`` per channel and state).

* :func:`selective_scan_ref` / :func:`selective_scan`: discretization + recurrence + readout.
  The fast one never materializes ``a`` or ``b`` at full size: it discretizes a chunk of time steps
  at a time into reused workspaces (a few MB), runs the recurrence on it with the readout ``C_t h_t``
  done per step while ``h_t`` is in cache, and in backward recomputes the chunk's ``a`` and reduces
  the gradients for Δ, A, B, C chunk by chunk (the only full-size tensor is ``h`` itself). It returns
  the per-step states ``h`` [B, L, E, N] too (for ``hook_ssm_state``; backward needs them anyway).
* :func:`selective_scan_cuda`: ``mamba_ssm``'s kernel when importable on CUDA (optional; returns only
  y and the last state, nonnegative gate, zero initial state).

Why this design (measured on the 2-core CPU box, B32 L512 E128 N16, forward+backward): mambapy's
``pscan`` took ~0.3-0.5 s for the recurrence alone, this one ~0.1-0.2 s; chunked decay-matrix scans
fit Mamba-1 badly (the decay differs per channel *and* per state: 2-30 s, GBs); log-space cumsums
overflow float32. The whole fused scan takes ~0.45 s forward+backward on one thread under load,
against ~1 s and more for discretization + pscan + readout as separate autograd ops.
"""
from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

from hooks.scan import _check_gate, _empty, _gate_, _in_scan_threads

# Target size (elements) of one chunk's temporaries in the fused scan (a few MB).
_CHUNK_ELEMENTS = 1 << 20
_MAX_CHUNK = 64


def selective_scan_ref(
    x: Float[Tensor, "B L E"],
    delta: Float[Tensor, "B L E"],
    A: Float[Tensor, "E N"],
    B: Float[Tensor, "B L N"],
    C: Float[Tensor, "B L N"],
    D: Optional[Float[Tensor, "E"]] = None,
    h0: Optional[Float[Tensor, "B E N"]] = None,
    gate: str = "nonnegative",
) -> tuple[Float[Tensor, "B L E"], Float[Tensor, "B L E N"]]:
    """Reference selective scan: one time step at a time, exactly the formulas in the module doc.

    Returns ``(y, h)`` with ``h`` the state after every step.
    """
    _check_gate(gate)
    Bs, L, E = x.shape
    h = x.new_zeros(Bs, E, A.shape[1]) if h0 is None else h0
    ys, hs = [], []
    for x_t, dt_t, B_t, C_t in zip(x.unbind(1), delta.unbind(1), B.unbind(1), C.unbind(1)):
        dt = dt_t.unsqueeze(-1)  # [B, E, 1]
        if gate == "nonnegative":
            a = torch.exp(dt * A)
        elif gate == "signed":
            a = 2.0 * torch.exp(dt * A) - 1.0
        else:
            a = torch.exp(A).expand_as(h)
        b = dt * B_t.unsqueeze(1) * x_t.unsqueeze(-1)  # Δ_t B_t x_t, [B, E, N]
        h = a * h + b
        y = (h * C_t.unsqueeze(1)).sum(-1)
        if D is not None:
            y = y + D * x_t
        ys.append(y)
        hs.append(h)
    return torch.stack(ys, 1), torch.stack(hs, 1)


def _chunk_size(Bs: int, E: int, N: int) -> int:
    return int(max(1, min(_MAX_CHUNK, _CHUNK_ELEMENTS // max(1, Bs * E * N))))


class _SelectiveScan(torch.autograd.Function):
    """Fused discretization + recurrence + readout, chunk by chunk over time (see module doc)."""

    @staticmethod
    @_in_scan_threads
    def forward(ctx, x, delta, A, Bm, C, D, h0, gate: str, chunk: int):
        ctx.set_materialize_grads(False)
        Bs, L, E = x.shape
        N = A.shape[1]
        ti = gate == "time_invariant"
        dx = delta * x
        h = _empty((Bs, L, E, N), x)
        y_tm = x.new_empty(L, Bs, E, 1)  # time-major, so that each step's readout is one small bmm
        prev = h0 if h0 is not None else x.new_zeros(Bs, E, N)
        a_const = _gate_(A.clone(), "time_invariant") if ti else None
        _SelectiveScan._forward_chunks(x, delta, A, Bm, C, dx, h, y_tm, prev, a_const, gate, chunk)
        y = y_tm.squeeze(-1).transpose(0, 1)
        y = torch.addcmul(y, x, D) if D is not None else y.contiguous()
        ctx.gate, ctx.chunk = gate, chunk
        ctx.has_h0, ctx.has_D = h0 is not None, D is not None
        ctx.save_for_backward(x, delta, A, Bm, C, D, h0, h)
        return y, h

    @staticmethod
    def _forward_chunks(x, delta, A, Bm, C, dx, h, y_tm, prev, a_const, gate, chunk):
        Bs, L, E, N = h.shape
        ti = a_const is not None
        ys, Cs = y_tm.unbind(0), C.unsqueeze(-1).unbind(1)  # [B, E, 1], [B, N, 1] per step
        # chunk workspaces, reused: fresh temporaries would be page-faulted in again at every chunk
        b_buf = x.new_empty(Bs, chunk, E, N)
        a_buf = None if ti else x.new_empty(Bs, chunk, E, N)
        for s in range(0, L, chunk):
            e = min(L, s + chunk)
            T = e - s
            b = torch.mul(dx[:, s:e].unsqueeze(-1), Bm[:, s:e].unsqueeze(2), out=b_buf[:, :T])  # Δ B x
            bs, hs = b.unbind(1), h[:, s:e].unbind(1)
            if ti:
                as_ = [a_const] * T
            else:
                as_ = _gate_(torch.mul(delta[:, s:e].unsqueeze(-1), A, out=a_buf[:, :T]), gate).unbind(1)
            for i in range(T):
                torch.addcmul(bs[i], as_[i], prev, out=hs[i])
                prev = hs[i]
                torch.bmm(prev, Cs[s + i], out=ys[s + i])  # readout while h_t is in cache

    @staticmethod
    @_in_scan_threads
    def backward(ctx, dy: Optional[Tensor], dh: Optional[Tensor]):
        x, delta, A, Bm, C, D, h0, h = ctx.saved_tensors
        gate, chunk = ctx.gate, ctx.chunk
        ti = gate == "time_invariant"
        Bs, L, E, N = h.shape
        if dy is None and dh is None:
            return (None,) * 9
        dx = delta * x
        gdx = torch.empty_like(x)  # grad wrt Δ∘x (through b)
        gdelta_a = None if ti else torch.empty_like(x)  # grad wrt Δ through a
        gB = torch.empty_like(Bm)
        gC_tm = x.new_empty(L, Bs, 1, N) if dy is not None else None  # time-major: one bmm per step
        gA = torch.zeros_like(A)
        a_const = _gate_(A.clone(), "time_invariant") if ti else None
        g, a_next = _SelectiveScan._backward_chunks(
            dy, dh, x, delta, A, Bm, C, h0, h, dx, gdx, gdelta_a, gB, gC_tm, gA, a_const, gate, chunk
        )
        gC = gC_tm.squeeze(2).transpose(0, 1).contiguous() if gC_tm is not None else None
        gh0 = g * a_next if (ctx.has_h0 and ctx.needs_input_grad[6]) else None
        gx = gdx * delta
        gD = None
        if dy is not None and ctx.has_D:
            gx.addcmul_(dy, D)
            gD = (dy * x).sum((0, 1))
        gdelta = gdx * x
        if gdelta_a is not None:
            gdelta += gdelta_a
        return gx, gdelta, gA, gB, gC, gD, gh0, None, None

    @staticmethod
    def _backward_chunks(dy, dh, x, delta, A, Bm, C, h0, h, dx, gdx, gdelta_a, gB, gC_tm, gA, a_const, gate, chunk):
        Bs, L, E, N = h.shape
        ti = a_const is not None
        g = None  # g_{t+1} = dL/dh_{t+1}, the total derivative
        a_next = None  # a_{t+1}
        if dy is not None:
            dys, gCs, hs_all = dy.unsqueeze(-2).unbind(1), gC_tm.unbind(0), h.unbind(1)
        # reused workspaces; G and a alternate between two buffers because g_{t+1} and a_{t+1} of the
        # chunk after (in time) are still needed at the first step of the next chunk processed
        G_bufs = [x.new_empty(Bs, chunk, E, N) for _ in range(2)]
        a_bufs = [None, None] if ti else [x.new_empty(Bs, chunk, E, N) for _ in range(2)]
        M_buf, tmp_buf = x.new_empty(Bs, chunk, E, N), x.new_empty(Bs, chunk, E, N)
        for k, s in enumerate(reversed(range(0, L, chunk))):
            e = min(L, s + chunk)
            T = e - s
            G = G_bufs[k % 2][:, :T]
            if dy is not None:
                for t in range(s, e):  # grad C_t = dy_t h_t: one small bmm per step, no copy of h
                    torch.bmm(dys[t], hs_all[t], out=gCs[t])
                torch.mul(dy[:, s:e].unsqueeze(-1), C[:, s:e].unsqueeze(2), out=G)  # readout's dh
                if dh is not None:
                    G.add_(dh[:, s:e])
            else:
                G.copy_(dh[:, s:e])
            if ti:
                a, as_ = a_const, [a_const] * T
            else:
                a = _gate_(torch.mul(delta[:, s:e].unsqueeze(-1), A, out=a_bufs[k % 2][:, :T]), gate)
                as_ = a.unbind(1)
            Gs = G.unbind(1)
            for i in range(T - 1, -1, -1):
                if g is not None:
                    Gs[i].addcmul_(a_next, g)
                g = Gs[i]
                a_next = as_[i]
            # grad wrt a_t is g_t h_{t-1}; times da/du gives the grad wrt u = Δ A (or A).
            M = M_buf[:, :T]
            if s > 0:
                torch.mul(G, h[:, s - 1 : e - 1], out=M)
            else:
                if T > 1:
                    torch.mul(G[:, 1:], h[:, : e - 1], out=M[:, 1:])
                if h0 is not None:
                    torch.mul(G[:, 0], h0, out=M[:, 0])
                else:
                    M[:, 0].zero_()
            tmp = tmp_buf[:, :T]
            if gate == "signed":
                M.mul_(torch.add(a, 1.0, out=tmp))  # d/du (2 e^u - 1) = 2 e^u = a + 1
            else:
                M.mul_(a)
            if ti:
                gA += M.sum((0, 1))
            else:
                gdelta_a[:, s:e] = torch.mul(M, A, out=tmp).sum(-1)
                gA += torch.mul(M, delta[:, s:e].unsqueeze(-1), out=tmp).sum((0, 1))
            gdx[:, s:e] = torch.matmul(G, Bm[:, s:e].unsqueeze(-1)).squeeze(-1)
            gB[:, s:e] = torch.matmul(dx[:, s:e].unsqueeze(-2), G).squeeze(-2)
        return g, a_next


def selective_scan(
    x: Float[Tensor, "B L E"],
    delta: Float[Tensor, "B L E"],
    A: Float[Tensor, "E N"],
    B: Float[Tensor, "B L N"],
    C: Float[Tensor, "B L N"],
    D: Optional[Float[Tensor, "E"]] = None,
    h0: Optional[Float[Tensor, "B E N"]] = None,
    gate: str = "nonnegative",
    chunk: Optional[int] = None,
) -> tuple[Float[Tensor, "B L E"], Float[Tensor, "B L E N"]]:
    """Fast selective scan; same ``(y, h)`` as :func:`selective_scan_ref` to float32 rounding.

    ``chunk``: time steps discretized at once (default: sized so a chunk's temporaries stay in cache).
    """
    _check_gate(gate)
    Bs, L, E = x.shape
    if L == 0:
        return x.new_zeros(Bs, 0, E), x.new_zeros(Bs, 0, E, A.shape[1])
    if chunk is None:
        chunk = _chunk_size(Bs, E, A.shape[1])
    return _SelectiveScan.apply(x, delta, A, B, C, D, h0, gate, int(chunk))


# ----------------------------------------------------------------------------------------------
# Optional CUDA kernel (mamba-ssm)
# ----------------------------------------------------------------------------------------------


def mamba_ssm_available() -> bool:
    """True when ``mamba_ssm``'s selective-scan kernel can be imported and CUDA is available."""
    if not torch.cuda.is_available():
        return False
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception:
        return False
    return True


def selective_scan_cuda(
    x: Float[Tensor, "B L E"],
    delta: Float[Tensor, "B L E"],
    A: Float[Tensor, "E N"],
    B: Float[Tensor, "B L N"],
    C: Float[Tensor, "B L N"],
    D: Optional[Float[Tensor, "E"]] = None,
) -> tuple[Float[Tensor, "B L E"], Float[Tensor, "B E N"]]:
    """``mamba_ssm``'s fused kernel (nonnegative gate, zero initial state): ``(y, h_last)``.

    It does not return the per-step states, so it is only usable when nothing hooks them.
    """
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    y, last = selective_scan_fn(
        x.transpose(1, 2).contiguous(),
        delta.transpose(1, 2).contiguous(),
        A.contiguous(),
        B.transpose(1, 2).contiguous(),
        C.transpose(1, 2).contiguous(),
        D=None if D is None else D.float(),
        return_last_state=True,
    )
    return y.transpose(1, 2), last


__all__ = ["selective_scan_ref", "selective_scan", "selective_scan_cuda", "mamba_ssm_available"]
