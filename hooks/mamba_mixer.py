"""HookedMamba's layers: the Mamba-1 mixer with its hooks, the residual block, RMSNorm, the causal conv.

Glossary (shapes): B batch, L pos, D d_model, E d_inner, N d_state, K d_conv, R dt_rank (as in
:mod:`hooks.mamba`, which documents the architecture, the hooks and what editing ``hook_ssm_state`` means).

* :class:`MambaMixer`: in_proj -> causal conv -> SiLU -> x_proj (Δ, B, C) -> selective scan -> gate ->
  out_proj, with every intermediate a ``HookPoint``; its ``_ssm`` picks the scan backend and carries
  state edits forward (:func:`hooks.scan.carry_edit`).
* :class:`MambaBlock`: ``resid + mixer(RMSNorm(resid))``; :class:`hooks.mamba2.Mamba2Block` swaps the mixer.
* :func:`causal_conv1d`: the causal depthwise conv both Mamba mixers use, with its hand-written backward.
* :class:`LayerState`: one layer's recurrent state (conv window and SSM state).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooks import scan as _scan
from hooks import selective_scan as _sel

if TYPE_CHECKING:
    from hooks.mamba import MambaConfig


@dataclass
class LayerState:
    """One layer's state: ``conv`` = the last K-1 inputs of the conv, ``ssm`` = h_t."""

    conv: Float[Tensor, "B E Km1"]
    ssm: Float[Tensor, "B E N"]

    def _map(self, fn) -> "LayerState":
        return LayerState(conv=fn(self.conv), ssm=fn(self.ssm))


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Float[Tensor, "B L D"]) -> Float[Tensor, "B L D"]:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in >= float32
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def causal_conv1d(
    x: Float[Tensor, "B L C"], window: Optional[Float[Tensor, "B C K1"]], weight: Float[Tensor, "C 1 K"],
    bias: Optional[Float[Tensor, "C"]],
) -> tuple[Float[Tensor, "B L C"], Float[Tensor, "B C K1"]]:
    """The mixers' causal depthwise conv (``nn.Conv1d(C, C, K, groups=C)`` weights) on ``x`` preceded by
    ``window`` (the last K-1 inputs before it; zeros when None). Returns ``(out, new_window)``: ``out[t] =
    bias + Σ_k weight[:, 0, k] ∘ xin[t + k]`` over ``xin = window ++ x``, computed in the [B, L, C] layout the
    rest of the mixer uses (K multiply-adds; no transposes, and a backward of K multiply-adds too, where
    ``F.conv1d``'s depthwise backward is slow on CPU); equal to ``F.conv1d`` (tested)."""
    Bs, _, C = x.shape
    K = weight.shape[-1]
    head = x.new_zeros(Bs, K - 1, C) if window is None else window.to(x.dtype).transpose(1, 2)
    xin = torch.cat([head, x], dim=1)  # [B, K-1+L, C]
    new_window = xin[:, xin.shape[1] - (K - 1):].transpose(1, 2).clone()  # own storage, not a view of xin
    return _CausalConv.apply(xin, weight.view(C, K), bias), new_window


class _CausalConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xin, w, bias):
        K = w.shape[1]
        L = xin.shape[1] - K + 1
        wk = w.t().unbind(0)  # K rows of [C]
        out = torch.mul(xin[:, :L], wk[0])
        for k in range(1, K):
            out.addcmul_(xin[:, k:k + L], wk[k])
        if bias is not None:
            out.add_(bias)
        ctx.save_for_backward(xin, w)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, g):
        xin, w = ctx.saved_tensors
        K = w.shape[1]
        L = xin.shape[1] - K + 1
        wk = w.t().unbind(0)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = xin.new_zeros(xin.shape)
            for k in range(K):
                gx[:, k:k + L].addcmul_(g, wk[k])
        if ctx.needs_input_grad[1]:
            g2 = g.reshape(-1, g.shape[-1])
            gw = torch.stack([(xin[:, k:k + L].reshape(-1, g.shape[-1]) * g2).sum(0) for k in range(K)], dim=1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum((0, 1))
        return gx, gw, gb


def _has_hooks(hp: HookPoint) -> bool:
    return bool(hp._forward_hooks or hp._backward_hooks or hp._forward_pre_hooks)


class MambaMixer(nn.Module):
    def __init__(self, cfg: MambaConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        E, N, R, K = cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
        self.in_proj = nn.Linear(cfg.d_model, 2 * E, bias=cfg.bias)
        self.conv1d = nn.Conv1d(E, E, K, groups=E, bias=cfg.conv_bias)  # causal: left context = state window
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.A_log = nn.Parameter(torch.empty(E, N))
        self.D = nn.Parameter(torch.empty(E))
        self.out_proj = nn.Linear(E, cfg.d_model, bias=cfg.bias)
        for name in ("in_proj", "gate", "conv", "ssm_input", "delta", "B", "C", "a", "ssm_state", "ssm_state_flat", "y"):
            setattr(self, f"hook_{name}", HookPoint())

    @torch.no_grad()
    def reset_parameters(self) -> None:
        cfg = self.cfg
        E, N = cfg.d_inner, cfg.d_state
        for lin in (self.in_proj, self.x_proj, self.out_proj):
            lin.reset_parameters()
            if lin.bias is not None:
                lin.bias.zero_()
        self.conv1d.reset_parameters()
        if cfg.rescale_prenorm_residual:  # GPT-2 scheme, as in mamba-ssm (one residual per layer)
            self.out_proj.weight /= math.sqrt(cfg.n_layers)
        std = cfg.dt_rank**-0.5 * cfg.dt_scale
        if cfg.dt_init == "constant":
            self.dt_proj.weight.fill_(std)
        else:
            self.dt_proj.weight.uniform_(-std, std)
        self.dt_proj.bias.copy_(_inv_softplus(_sample_dt(cfg, E)))
        log_n = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(E, N)
        if cfg.gate == "time_invariant":  # a = exp(A): absorb a per-channel initial step into A_log
            log_n = log_n + torch.log(_sample_dt(cfg, E)).unsqueeze(-1)
        self.A_log.copy_(log_n)
        self.D.fill_(1.0)

    def forward(
        self,
        u: Float[Tensor, "B L D"],
        state: Optional[LayerState],
        edit_mode: str = "overwrite",
    ) -> tuple[Float[Tensor, "B L D"], LayerState]:
        cfg = self.cfg
        E, N, R = cfg.d_inner, cfg.d_state, cfg.dt_rank
        xz = self.hook_in_proj(self.in_proj(u))
        x, z = xz.split([E, E], dim=-1)
        gate = self.hook_gate(F.silu(z))
        conv, new_window = causal_conv1d(x, state.conv if state is not None else None, self.conv1d.weight,
                                         self.conv1d.bias)
        xc = self.hook_conv(F.silu(conv))
        dt_low, Bm, Cm = self.x_proj(xc).split([R, N, N], dim=-1)
        delta = self.hook_delta(F.softplus(self.dt_proj(dt_low)))
        Bm, Cm = self.hook_B(Bm), self.hook_C(Cm)
        xs = self.hook_ssm_input(xc)
        with _scan._scan_threads():  # a small exp: threads only add a barrier (see hooks.scan)
            A = -torch.exp(self.A_log)
        h0 = state.ssm if state is not None else None
        y, h_last = self._ssm(xs, delta, A, Bm, Cm, h0, edit_mode)
        y = self.hook_y(y)
        out = self.out_proj(y * gate)
        return out, LayerState(conv=new_window, ssm=h_last)

    # -- the scan, with hook_a / hook_ssm_state handling --------------------------------------------

    def _backend(self, device: torch.device, h0: Optional[Tensor]) -> str:
        scan = self.cfg.scan
        if scan == "sequential":
            return "sequential"
        usable = (
            device.type == "cuda" and self.cfg.gate == "nonnegative" and h0 is None and _sel.mamba_ssm_available()
        )
        if scan == "cuda" and not usable:
            if not _sel.mamba_ssm_available():
                raise RuntimeError("MambaConfig.scan='cuda' needs mamba-ssm installed and a CUDA device")
            return "fast"  # initial state or non-Mamba gate: the kernel cannot do it
        return "cuda" if usable and scan in ("auto", "cuda") else "fast"

    def _ssm(self, xs, delta, A, Bm, Cm, h0, edit_mode):
        gate, D = self.cfg.gate, self.D
        backend = self._backend(xs.device, h0)
        recur = _scan.linear_recurrence_ref if backend == "sequential" else _scan.linear_recurrence
        hp_a, hp_h = self.hook_a, self.hook_ssm_state

        def scan_fn(h_init):
            f = _sel.selective_scan_ref if backend == "sequential" else _sel.selective_scan
            return f(xs, delta, A, Bm, Cm, D, h_init, gate=gate)

        ab = None  # (a, b) when the unfused path is needed
        if _has_hooks(hp_a):
            a, b = _scan.discretize(xs, delta, A, Bm, gate)
            if gate == "time_invariant" or a.requires_grad:
                a = a.contiguous() if not a.requires_grad else a.clone()  # safe to edit in place
            v = a._version
            a2 = hp_a(a)
            if a2 is not a or a._version != v:
                _check_like(a2, a, "hook_a")
                ab = (a2, b)
        flat_hooked = _has_hooks(self.hook_ssm_state_flat)
        state_hooked = _has_hooks(hp_h) or flat_hooked
        if ab is not None:
            h = recur(ab[0], ab[1], h0)
            y = None
        elif backend == "cuda" and not state_hooked:
            y, last = _sel.selective_scan_cuda(xs, delta, A, Bm, Cm, D)
            return y.to(xs.dtype), last.to(xs.dtype)
        else:
            y, h = scan_fn(h0)
        if not state_hooked:
            if y is None:
                y = _scan.readout(h, Cm, xs, D)
            return y, _last(h)

        if len(hp_h._forward_hooks) > 1 or flat_hooked:
            H = self._chain_state_hooks(h, ab, scan_fn, recur, xs, delta, A, Bm, h0, edit_mode)
            if H is h and y is not None:  # observed only
                return y, _last(h)
            return _scan.readout(H, Cm, xs, D), _last(H)
        v = h._version
        h2 = hp_h(h)
        if h2 is h and h._version == v:  # observed only (e.g. cached)
            if y is None:
                y = _scan.readout(h, Cm, xs, D)
            return y, _last(h)
        _check_like(h2, h, "hook_ssm_state")
        if h._version == v:  # the hook returned a new tensor: h still holds the pre-edit states
            base, new = h, h2
            # With autograd on, recompute every position so that the gradient reaching the hook is
            # the total derivative dL/dh_t (later states depend on h_t), as the edit semantics imply.
            track = torch.is_grad_enabled() and h2.requires_grad
        else:  # edited in place: recompute the pre-edit states; written values become constants
            base = recur(ab[0], ab[1], h0) if ab is not None else scan_fn(h0)[1]
            new, track = h2.detach(), False
        H = self._carry(base, new, track, ab, xs, delta, A, Bm, h0, recur, edit_mode)
        if H is None:
            if y is None or base is not h:
                y = _scan.readout(base, Cm, xs, D)
            return y, _last(base)
        return _scan.readout(H, Cm, xs, D), _last(H)

    def _carry(self, base, new, track, ab, xs, delta, A, Bm, h0, recur, edit_mode):
        """The states carried after a hook turned ``base`` into ``new`` (module docstring); None when
        nothing changed and no gradient has to be routed through ``new``."""
        def tail_ab(t0):
            if ab is not None:
                return ab[0][:, t0:], ab[1][:, t0:]
            return _scan.discretize(xs[:, t0:], delta[:, t0:], A, Bm[:, t0:], self.cfg.gate)

        return _scan.carry_edit(base, new, track, h0, edit_mode, tail_ab, recur)

    def _chain_state_hooks(self, h, ab, scan_fn, recur, xs, delta, A, Bm, h0, edit_mode):
        """Several forward hooks on ``hook_ssm_state`` (then ``hook_ssm_state_flat``): each sees (and a
        cache records) the states the model actually carries after the edits of the hooks before it,
        i.e. the sequential loop with every earlier edit applied. Backward hooks see the gradient at
        the final states. Returns ``h`` itself when nothing was edited."""
        points = [(self.hook_ssm_state, "hook_ssm_state", lambda t: t),
                  (self.hook_ssm_state_flat, "hook_ssm_state_flat", lambda t: t.flatten(2))]
        saved = [hp._forward_hooks for hp, _, _ in points]
        for hp, _, _ in points:
            hp._forward_hooks = type(hp._forward_hooks)()
        try:
            cur = h
            for (hp, name, view), fwd in zip(points, saved):
                for fn in list(fwd.values()):
                    v = cur._version
                    snap = cur.clone() if cur is not h else None  # pre-values, should the hook edit in place
                    seen = view(cur)
                    out = fn(hp, (seen,), seen)
                    if out is None and cur._version == v:
                        continue  # observed only
                    if out is not None:
                        _check_like(out, seen, name)
                        out = out.reshape(cur.shape)
                    if out is not None and cur._version == v:  # a new tensor: cur still holds its values
                        base, new = cur, out
                        track = torch.is_grad_enabled() and new.requires_grad
                    else:  # edited in place: the written values are constants
                        if snap is None:
                            snap = recur(ab[0], ab[1], h0) if ab is not None else scan_fn(h0)[1]
                        base, new, track = snap, (out if out is not None else cur).detach(), False
                    H = self._carry(base, new, track, ab, xs, delta, A, Bm, h0, recur, edit_mode)
                    cur = base if H is None else H
            for hp, _, view in points:  # backward hooks: on the final states, gradient = dL/dh_t in total
                if _has_hooks(hp):
                    new = hp(view(cur)).reshape(cur.shape)
                    H = self._carry(cur, new, torch.is_grad_enabled() and new.requires_grad, ab, xs, delta,
                                    A, Bm, h0, recur, edit_mode)
                    cur = cur if H is None else H
            return cur
        finally:
            for (hp, _, _), fwd in zip(points, saved):
                hp._forward_hooks = fwd


def _last(h: Tensor) -> Tensor:
    """h_T as its own small tensor (a view would keep the whole [B, L, E, N] storage alive)."""
    return h[:, -1].clone()


_check_like = _scan.check_hook_output


def _sample_dt(cfg: MambaConfig, n: int) -> Tensor:
    lo, hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
    return torch.exp(torch.rand(n) * (hi - lo) + lo).clamp(min=cfg.dt_init_floor)


def _inv_softplus(y: Tensor) -> Tensor:
    return y + torch.log(-torch.expm1(-y))


class MambaBlock(nn.Module):
    mixer_class = MambaMixer

    def __init__(self, cfg: MambaConfig, layer: int):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = self.mixer_class(cfg, layer)
        self.hook_resid_pre = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid, state: Optional[LayerState], edit_mode: str):
        resid = self.hook_resid_pre(resid)
        out, new_state = self.mixer(self.norm(resid), state, edit_mode)
        return self.hook_resid_post(resid + out), new_state

__all__ = ["LayerState", "RMSNorm", "MambaMixer", "MambaBlock", "causal_conv1d"]
