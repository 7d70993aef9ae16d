"""The linear recurrence under both Mamba scans, its gates, and state edits carried forward.

Glossary (shapes):
    B  batch          L  pos (time)       E  d_inner (channels)      N  d_state

The recurrence, per channel e and state n (``∘`` is elementwise)::

    h_t = a_t ∘ h_{t-1} + b_t                  h_{-1} = h0 (zeros by default)
    y_t = Σ_n C_t[n] h_t[:, n] + D ∘ x_t       (readout with skip)

with the discretized gate ``a_t`` and write term ``b_t = Δ_t B_t x_t`` computed from the scan inputs
by :func:`discretize`. Three gates (``GATES``):

* ``"nonnegative"`` (Mamba): ``a = exp(Δ A)`` ∈ (0, 1) since ``A = -exp(A_log) < 0``.
* ``"signed"`` (Grazzi et al. 2025): ``a = 2 exp(Δ A) - 1`` ∈ (-1, 1); ``b`` unchanged.
* ``"time_invariant"``: ``a = exp(A)``, independent of the input and of t (the step is absorbed into
  ``A``); ``b_t = Δ_t B_t x_t`` still uses the input-dependent Δ.

Functions:

* :func:`linear_recurrence_ref` / :func:`linear_recurrence`: ``h_t = a_t ∘ h_{t-1} + b_t`` alone, over
  dim 1. The fast one is a custom autograd Function: forward is a loop of ``torch.addcmul(..., out=)``
  into one preallocated output (each step touches a [B, ...] slice once); backward is the reverse
  recurrence ``g_t = dh_t + a_{t+1} g_{t+1}``, ``grad_b = g``, ``grad_a_t = g_t h_{t-1}``, fused in the
  same loop. No cumulative products or log-sums, so it is exactly as stable as the plain loop at any
  length (finite at L = 100,000).
* :func:`discretize` / :func:`readout`: Mamba-1's ``(a, b)`` at full size and ``y`` from given states.
* :func:`carry_state_edit` / :func:`carry_edit`: the states after a hook edited ``hook_ssm_state``,
  carried forward by the recurrence (HookedMamba and HookedMamba2).

Mamba-1's fused selective scan (discretization + recurrence + readout) is :mod:`hooks.selective_scan`,
Mamba-2's chunked scan :mod:`hooks.ssd`; both use this module's gates, threads and buffers.

Two machine-level choices, both switchable: the fast scans run on one intra-op thread by default
(:func:`set_scan_threads`; their ops are small, and on a shared machine a thread barrier per op is
what costs), and they ask for transparent huge pages on their large outputs (:func:`set_huge_pages`;
faulting in 4 KiB pages cost more than the arithmetic).

"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

GATES = ("nonnegative", "signed", "time_invariant")

# Below this many elements per time slice, the recurrence's backward computes grad_a in one
# vectorized product after the loop instead of step by step.
_FUSE_MIN_ELEMENTS = 1 << 14

# Intra-op threads used inside the fast scans (None: leave torch's setting). The scans are many small
# ops (one [B, E, N] slice per time step, one chunk of steps at a time). Splitting such ops over
# threads costs a barrier each, and when the cores are shared with other processes every barrier can
# wait a whole scheduler slice: measured here with other jobs running, the B32 L512 E128 N16
# recurrence took 0.30 s on 2 threads and 0.11 s on 1, and torch.exp of a 1M-element tensor 8.7 ms on
# 2 threads and 0.44 ms on 1. The rest of the model keeps torch's setting.
_SCAN_THREADS: Optional[int] = 1


def set_scan_threads(n: Optional[int]) -> None:
    """Threads for the fast scans' internals (default 1; ``None``: torch's current setting)."""
    global _SCAN_THREADS
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"scan threads must be a positive int or None, got {n!r}")
    _SCAN_THREADS = n


def get_scan_threads() -> Optional[int]:
    return _SCAN_THREADS


class _scan_threads:
    """Context manager: torch intra-op threads = ``_SCAN_THREADS`` inside, restored on exit."""

    def __enter__(self):
        self.old = torch.get_num_threads()
        if _SCAN_THREADS is not None and _SCAN_THREADS != self.old:
            torch.set_num_threads(_SCAN_THREADS)
        return self

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.old:
            torch.set_num_threads(self.old)
        return False


# Large outputs (the states h, and the recurrence's gradients) are fresh memory: on Linux every 4 KiB
# page is faulted in on first write, which here cost more than the recurrence's own arithmetic
# (128 MiB: ~80 ms of faults vs ~30 ms to write it). Asking the kernel for transparent huge pages on
# such buffers (madvise MADV_HUGEPAGE; honoured when THP is "madvise" or "always") cuts that ~5x.
# Advisory only: the data and its lifetime are torch's as usual. ``set_huge_pages(False)`` turns it off.
_HUGE_PAGES = True
_HUGE_MIN_BYTES = 16 << 20
_MADV_HUGEPAGE = 14
_HUGE_ALIGN = 2 << 20
_libc = None


def set_huge_pages(enabled: bool) -> None:
    """Whether the fast scans ask for transparent huge pages on their large outputs (default True)."""
    global _HUGE_PAGES
    _HUGE_PAGES = bool(enabled)


def _empty(shape, like: Tensor) -> Tensor:
    """``torch.empty`` for a scan output, with huge pages requested when large (see above)."""
    global _libc
    t = torch.empty(shape, dtype=like.dtype, device=like.device)
    nbytes = t.numel() * t.element_size()
    if not _HUGE_PAGES or t.device.type != "cpu" or nbytes < _HUGE_MIN_BYTES or not sys.platform.startswith("linux"):
        return t
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        start = (t.data_ptr() + _HUGE_ALIGN - 1) // _HUGE_ALIGN * _HUGE_ALIGN
        end = (t.data_ptr() + nbytes) // _HUGE_ALIGN * _HUGE_ALIGN
        if end > start:
            _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_HUGEPAGE)
    except Exception:  # advisory: never fail because of it
        pass
    return t


def _in_scan_threads(fn):
    """Run ``fn`` under :class:`_scan_threads` (used on the autograd Functions' forward/backward)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _scan_threads():
            return fn(*args, **kwargs)

    return wrapper


def _check_gate(gate: str) -> None:
    if gate not in GATES:
        raise ValueError(f"unknown gate {gate!r}; expected one of {GATES}")


def _gate_of(u: Tensor, gate: str) -> Tensor:
    """``a`` from ``u = Δ A`` (or ``u = A`` for the time-invariant gate). Out of place and differentiable
    (an in-place ``mul_`` on ``exp``'s output would break autograd, which saves that output)."""
    if gate == "signed":
        return 2.0 * torch.exp(u) - 1.0
    return torch.exp(u)


def _gate_(u: Tensor, gate: str) -> Tensor:
    """In-place :func:`_gate_of` on a temporary we own (no autograd). In place on purpose: an
    allocating ``torch.exp`` enters a parallel region even for tiny tensors (slow on a busy machine)."""
    u.exp_()
    if gate == "signed":
        u.mul_(2.0).sub_(1.0)
    return u


# ----------------------------------------------------------------------------------------------
# Discretization and readout (vectorized; used by the unfused path and the edit recompute)
# ----------------------------------------------------------------------------------------------


def discretize(
    x: Float[Tensor, "B L E"],
    delta: Float[Tensor, "B L E"],
    A: Float[Tensor, "E N"],
    B: Float[Tensor, "B L N"],
    gate: str = "nonnegative",
) -> tuple[Float[Tensor, "B L E N"], Float[Tensor, "B L E N"]]:
    """Return ``(a, b)``: the discretized gate and write term, each [B, L, E, N].

    For ``"time_invariant"`` the gate is an expanded (no-copy) view of ``exp(A)``.
    """
    _check_gate(gate)
    Bs, L, E = x.shape
    if gate == "time_invariant":
        a = torch.exp(A).expand(Bs, L, *A.shape)
    else:
        a = _gate_of(delta.unsqueeze(-1) * A, gate)
    b = (delta * x).unsqueeze(-1) * B.unsqueeze(2)
    return a, b


def readout(
    h: Float[Tensor, "B L E N"],
    C: Float[Tensor, "B L N"],
    x: Optional[Float[Tensor, "B L E"]] = None,
    D: Optional[Float[Tensor, "E"]] = None,
) -> Float[Tensor, "B L E"]:
    """``y_t = h_t C_t (+ D ∘ x_t)``."""
    y = torch.matmul(h, C.unsqueeze(-1)).squeeze(-1)
    if D is not None:
        y = y + x * D
    return y


# ----------------------------------------------------------------------------------------------
# The recurrence alone
# ----------------------------------------------------------------------------------------------


def linear_recurrence_ref(
    a: Float[Tensor, "B L *S"], b: Float[Tensor, "B L *S"], h0: Optional[Float[Tensor, "B *S"]] = None
) -> Float[Tensor, "B L *S"]:
    """Reference: ``h_t = a_t * h_{t-1} + b_t`` with a plain Python loop (differentiable by autograd)."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    out = []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):  # unbind: x[:, t] would make backward quadratic
        h = a_t * h + b_t
        out.append(h)
    return torch.stack(out, dim=1)


class _LinearRecurrence(torch.autograd.Function):
    @staticmethod
    @_in_scan_threads
    def forward(ctx, a: Tensor, b: Tensor, h0: Optional[Tensor]) -> Tensor:
        ctx.set_materialize_grads(False)
        h = _empty(b.shape, b)
        hs, as_, bs = h.unbind(1), a.unbind(1), b.unbind(1)
        if h0 is None:
            hs[0].copy_(bs[0])
        else:
            torch.addcmul(bs[0], as_[0], h0, out=hs[0])
        prev = hs[0]
        for t in range(1, len(hs)):
            torch.addcmul(bs[t], as_[t], prev, out=hs[t])
            prev = hs[t]
        ctx.has_h0 = h0 is not None
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    @_in_scan_threads
    def backward(ctx, dh: Optional[Tensor]):
        a, h, h0 = ctx.saved_tensors
        if dh is None:
            return None, None, None
        L = h.shape[1]
        g = _empty(h.shape, h)
        ga = _empty(h.shape, h)
        gs, dhs, as_, hs, gas = g.unbind(1), dh.unbind(1), a.unbind(1), h.unbind(1), ga.unbind(1)
        nxt = gs[L - 1]
        nxt.copy_(dhs[L - 1])
        # grad_a_t = g_t h_{t-1}: in the loop while g_t is in cache, unless the slices are so small
        # that the per-op overhead dominates (then one vectorized product afterwards).
        fused = gs[0].numel() >= _FUSE_MIN_ELEMENTS
        for t in range(L - 1, 0, -1):
            if t < L - 1:
                torch.addcmul(dhs[t], as_[t + 1], nxt, out=gs[t])
                nxt = gs[t]
            if fused:
                torch.mul(nxt, hs[t - 1], out=gas[t])
        if L > 1:
            torch.addcmul(dhs[0], as_[1], nxt, out=gs[0])
            if not fused:
                torch.mul(g[:, 1:], h[:, :-1], out=ga[:, 1:])
        gh0 = None
        if ctx.has_h0:
            torch.mul(gs[0], h0, out=gas[0])
            gh0 = gs[0] * as_[0] if ctx.needs_input_grad[2] else None
        else:
            gas[0].zero_()
        return ga, g, gh0


def linear_recurrence(
    a: Float[Tensor, "B L *S"], b: Float[Tensor, "B L *S"], h0: Optional[Float[Tensor, "B *S"]] = None
) -> Float[Tensor, "B L *S"]:
    """Fast ``h_t = a_t * h_{t-1} + b_t`` over dim 1 (same result as :func:`linear_recurrence_ref`).

    ``a`` may be a broadcast (expanded) view of ``b``'s shape. Memory: one output the size of ``b``;
    backward allocates ``grad_a`` and ``grad_b`` and nothing else of that size.
    """
    if a.shape != b.shape:
        a = a.expand(b.shape)
    if b.shape[1] == 0:
        return b.clone()
    return _LinearRecurrence.apply(a, b, h0)


# ----------------------------------------------------------------------------------------------
# Edits of the per-step states, carried forward (hook_ssm_state of HookedMamba and HookedMamba2)
# ----------------------------------------------------------------------------------------------


EDIT_MODES = ("overwrite", "add")


class StateEditModes:
    """How a model carries edits made by ``hook_ssm_state`` hooks (:func:`carry_state_edit`):
    ``model.ssm_state_edit`` is ``"overwrite"`` (default) or ``"add"``; ``with model.state_edit_mode(m):``
    sets it for a block. Mixed into HookedMamba, HookedMamba2 and HookedDiagonalSSM."""

    ssm_state_edit: str = "overwrite"

    @contextlib.contextmanager
    def state_edit_mode(self, mode: str):
        """Temporarily set how edits made by ``hook_ssm_state`` hooks are carried."""
        check_edit_mode(mode)
        old, self.ssm_state_edit = self.ssm_state_edit, mode
        try:
            yield self
        finally:
            self.ssm_state_edit = old


def check_edit_mode(mode: str) -> None:
    if mode not in EDIT_MODES:
        raise ValueError(f"state edit mode must be one of {EDIT_MODES}, got {mode!r}")


def check_hook_output(new, old: Tensor, name: str) -> None:
    """A hook's return value must be a tensor of the hooked tensor's shape (else a one-line error)."""
    if not isinstance(new, Tensor) or new.shape != old.shape:
        shape = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
        raise ValueError(f"a hook on {name} must return a tensor of shape {tuple(old.shape)}, got {shape}")


def carry_state_edit(h: Tensor, h2, version: int, h0: Optional[Tensor], edit_mode: str, tail_ab, recur,
                     recompute) -> Tensor:
    """The per-step states after a hook on them returned ``h2`` for ``h`` [B, L, *S].

    ``version`` is ``h._version`` before the hook ran; ``h0`` the initial state; ``tail_ab(t0)`` gives
    ``(a, b)`` at state size from position t0 on; ``recur`` is the linear recurrence to use and
    ``recompute()`` the pre-edit states (needed when the hook edited ``h`` in place). Returns ``h``
    itself when the hook only observed (outputs computed from ``h`` stay valid), else the states of
    the sequential loop ``H_t = a_t H_{t-1} + b_t`` with the edited entries overwritten by the hook's
    values (``edit_mode="overwrite"``) or with the hook's difference added (``"add"``); see
    :mod:`hooks.mamba` for the semantics. With autograd on and a hook output that requires grad,
    every position is recomputed so that the gradient reaching the hook is the total derivative.
    """
    if h2 is h and h._version == version:  # observed only (e.g. cached)
        return h
    check_hook_output(h2, h, "hook_ssm_state")
    if h._version == version:  # the hook returned a new tensor: h still holds the pre-edit states
        base, new = h, h2
        track = torch.is_grad_enabled() and h2.requires_grad
    else:  # edited in place: recompute the pre-edit states; written values become constants
        base = recompute()
        new, track = h2.detach(), False
    H = carry_edit(base, new, track, h0, edit_mode, tail_ab, recur)
    return base if H is None else H


def carry_edit(base: Tensor, new: Tensor, track: bool, h0: Optional[Tensor], edit_mode: str, tail_ab,
               recur) -> Optional[Tensor]:
    """The states carried after a hook turned the states ``base`` [B, L, *S] into ``new``
    (:func:`carry_state_edit`'s semantics; ``track``: route the gradient to ``new`` at every
    position); None when nothing changed and no gradient has to be routed through ``new``."""
    with torch.no_grad():
        changed = (new != base) & ~(torch.isnan(new) & torch.isnan(base))  # NaN left as NaN: no edit
        per_pos = changed.flatten(2).any(-1).any(0)
    if not bool(per_pos.any()) and not track:
        return None
    t0 = 0 if track else int(per_pos.nonzero()[0])
    a_t, b_t = tail_ab(t0)
    m = changed[:, t0:]
    # Overwrite: H_t = hook value where edited, else a_t H_{t-1} + b_t. Add: H_t = a_t H_{t-1} + b_t
    # + (hook value - h_t). Both are one linear recurrence; the "+ (new - base)" terms are exactly
    # zero where nothing was edited and only carry the gradient to the hook's output.
    diff = new[:, t0:] - base[:, t0:] if (track or edit_mode == "add") else None
    if edit_mode == "overwrite":
        a_t = a_t.masked_fill(m, 0.0)
        b_t = torch.where(m, new[:, t0:], b_t + diff if diff is not None else b_t)
    else:
        b_t = b_t + diff
    init = h0 if t0 == 0 else base[:, t0 - 1]
    tail = recur(a_t, b_t, init)
    return torch.cat([base[:, :t0], tail], dim=1) if t0 > 0 else tail


__all__ = [
    "GATES",
    "discretize",
    "readout",
    "linear_recurrence_ref",
    "linear_recurrence",
    "EDIT_MODES",
    "StateEditModes",
    "check_edit_mode",
    "check_hook_output",
    "carry_state_edit",
    "carry_edit",
    "set_scan_threads",
    "get_scan_threads",
    "set_huge_pages",
]
