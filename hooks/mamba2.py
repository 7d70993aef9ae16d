"""HookedMamba2: Mamba-2 with every per-step quantity a TransformerLens ``HookPoint``.

Glossary (shapes):
    B  batch       L  pos        D  d_model        E  d_inner = expand * d_model      V  vocab_size
    H  heads = E / headdim       P  headdim        G  n_groups      N  d_state        K  d_conv
    X  conv channels = E + 2 G N (x, B and C go through the conv together)

Architecture (as ``transformers.Mamba2ForCausalLM``, torch path): embedding; per layer a pre-norm
residual block ``resid + mixer(RMSNorm(resid))``; final RMSNorm; LM head (tied by default). The mixer::

    z, xBC, dt = split(in_proj(u))                 [B, L, E], [B, L, X], [B, L, H]
    xBC = SiLU(causal depthwise conv1d(xBC));  x, B, C = split(xBC)     x: [B, L, H, P], B, C: [B, L, G, N]
    Δ = softplus(dt + dt_bias)  (clamped to dt_limit when set)          [B, L, H]
    h_t = a_t h_{t-1} + Δ_t x_t ⊗ B_t      (a_t: one scalar per head, see hooks.ssd)   [B, L, H, P, N]
    y_t = h_t C_t + D ∘ x_t                                              [B, L, H, P]
    out = out_proj(GroupRMSNorm(y ∘ SiLU(z)))    (RMS over each of the G groups of E / G channels)

Head h reads group ``h // (H / G)``. Gates (``gate``, as in :mod:`hooks.scan`): ``"nonnegative"``
(Mamba-2: ``a = exp(Δ A)`` ∈ (0, 1), ``A = -exp(A_log)`` per head), ``"signed"`` (``2 exp(Δ A) - 1``
∈ (-1, 1)), ``"time_invariant"`` (``a = exp(A)``).

Hooks (length-independent names, the HookedMamba vocabulary): ``hook_embed``,
``blocks.{l}.hook_resid_pre``, ``blocks.{l}.mixer.hook_in_proj`` [B, L, 2E + 2GN + H],
``hook_gate`` SiLU(z) [B, L, E], ``hook_conv`` [B, L, X], ``hook_ssm_input`` x [B, L, H, P],
``hook_delta`` [B, L, H], ``hook_B`` / ``hook_C`` [B, L, G, N], ``hook_a`` [B, L, H],
``hook_ssm_state`` [B, L, H, P, N] (the state after token t), ``hook_y`` [B, L, E] (scan output with the
D skip, before the gated norm), ``blocks.{l}.hook_resid_post``, ``hook_norm_final``, ``hook_logits``.

Editing ``hook_ssm_state`` is carried forward by the recurrence exactly as in :class:`hooks.mamba.HookedMamba`
(same ``ssm_state_edit`` modes ``"overwrite"`` / ``"add"``, same :func:`hooks.scan.carry_state_edit`);
editing ``hook_a`` reruns the recurrence with the edited gates. The recurrent-state API is HookedMamba's:
``model(tokens, state, return_state=True)`` with a :class:`hooks.mamba.MambaState` whose ``layers[l]`` has
``conv`` [B, X, K-1] (the conv's last K-1 inputs) and ``ssm`` [B, H, P, N].

Scans (``scan``): ``"chunked"`` (default: :func:`hooks.ssd.ssd_chunked`, chunks of ``chunk_size`` steps,
used whenever no hook observes the states) and ``"sequential"`` (:func:`hooks.ssd.ssd_scan_ref`, the
reference loop). When ``hook_ssm_state`` or ``hook_a`` is hooked, the per-step states are written by
:func:`hooks.ssd.ssd_states` (the reference loop under ``"sequential"``); when they are only observed
(cached), the outputs still come from the chunked scan.

``HookedMamba2`` subclasses :class:`hooks.mamba.HookedMamba` for the model-level code they share (embedding,
residual stream, final norm and head, initialization order, token checks, state edit modes, the state
API, checkpoint loading errors); its config, blocks and state shapes are its own.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooks import scan as _scan
from hooks import ssd as _ssd
from hooks._mamba2_hf import from_hf, to_hf
from hooks.mamba import EDIT_MODES, HookedMamba, config_from_dict
from hooks.mamba_mixer import LayerState, MambaBlock, _has_hooks, _inv_softplus, _last, causal_conv1d

GATES = _scan.GATES
SCANS = ("chunked", "sequential")


@dataclass
class Mamba2Config:
    """Mamba-2 configuration. Derived: ``d_inner = expand * d_model``, ``n_heads = d_inner / headdim``,
    ``d_vocab`` (= ``vocab_size``; the name the shared model code reads).

    ``dt_limit``: ``(lo, hi)`` clamp of Δ after the softplus (HF ``time_step_limit``), None for none.
    ``dt_min``/``dt_max``/``dt_init_floor``, ``initializer_range`` and ``rescale_prenorm_residual`` set the
    initialization as in HF's ``Mamba2Mixer``.
    """

    d_model: int
    n_layers: int
    vocab_size: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    headdim: int = 16
    n_groups: int = 1
    chunk_size: int = 32
    gate: str = "nonnegative"
    scan: str = "chunked"
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    bias: bool = False
    conv_bias: bool = True
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    dt_limit: Optional[tuple[float, float]] = None
    initializer_range: float = 0.02
    rescale_prenorm_residual: bool = True
    d_inner: int = field(init=False)
    n_heads: int = field(init=False)
    d_vocab: int = field(init=False)

    _DERIVED = ("d_inner", "n_heads", "d_vocab")

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "vocab_size", "d_state", "d_conv", "expand", "headdim", "n_groups",
                     "chunk_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Mamba2Config: {name} must be a positive integer, got {v!r}")
        self.d_inner = self.expand * self.d_model
        if self.d_inner % self.headdim:
            raise ValueError(f"Mamba2Config: d_inner = expand * d_model = {self.d_inner} is not a multiple of "
                             f"headdim = {self.headdim}")
        self.n_heads = self.d_inner // self.headdim
        if self.n_heads % self.n_groups:
            raise ValueError(f"Mamba2Config: n_heads = {self.n_heads} is not a multiple of n_groups = {self.n_groups}")
        self.d_vocab = self.vocab_size
        for name, allowed in (("gate", GATES), ("scan", SCANS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Mamba2Config: {name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("norm_eps", "dt_min", "dt_max", "dt_init_floor", "initializer_range"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"Mamba2Config: {name} must be a positive finite number, got {v!r}")
        if self.dt_min > self.dt_max:
            raise ValueError(f"Mamba2Config: dt_min ({self.dt_min}) must be <= dt_max ({self.dt_max})")
        if self.dt_limit is not None:
            lo, hi = (float(v) for v in self.dt_limit)
            if not 0 <= lo < hi:
                raise ValueError(f"Mamba2Config: dt_limit must be (lo, hi) with 0 <= lo < hi, got {self.dt_limit!r}")
            self.dt_limit = (lo, hi)
        for name in ("tie_embeddings", "bias", "conv_bias", "rescale_prenorm_residual"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Mamba2Config: {name} must be a bool, got {getattr(self, name)!r}")

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.n_groups * self.d_state

    def to_dict(self) -> dict[str, Any]:
        """All fields (derived ones included, for readers); :meth:`from_dict` accepts the result."""
        d = dataclasses.asdict(self)
        if d["dt_limit"] is not None:
            d["dt_limit"] = list(d["dt_limit"])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Mamba2Config":
        """Inverse of :meth:`to_dict`. Unknown keys, or derived values that disagree, raise ``ValueError``."""
        return config_from_dict(cls, d, dt_limit=tuple)


class GatedRMSNorm(nn.Module):
    """``weight ∘ RMSNorm_per_group(y ∘ SiLU(z))`` over ``n_groups`` groups of the last dimension."""

    def __init__(self, d: int, n_groups: int, eps: float):
        super().__init__()
        self.eps, self.n_groups = eps, n_groups
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, y: Float[Tensor, "B L E"], gate: Float[Tensor, "B L E"]) -> Float[Tensor, "B L E"]:
        v = y * gate
        g = v.unflatten(-1, (self.n_groups, -1))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * g.flatten(-2)


class Mamba2Mixer(nn.Module):
    def __init__(self, cfg: Mamba2Config, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        E, H, X, K = cfg.d_inner, cfg.n_heads, cfg.conv_dim, cfg.d_conv
        self.in_proj = nn.Linear(cfg.d_model, E + X + H, bias=cfg.bias)
        self.conv1d = nn.Conv1d(X, X, K, groups=X, bias=cfg.conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.A_log = nn.Parameter(torch.empty(H))
        self.D = nn.Parameter(torch.empty(H))
        self.norm = GatedRMSNorm(E, cfg.n_groups, cfg.norm_eps)
        self.out_proj = nn.Linear(E, cfg.d_model, bias=cfg.bias)
        for name in ("in_proj", "gate", "conv", "ssm_input", "delta", "B", "C", "a", "ssm_state", "y"):
            setattr(self, f"hook_{name}", HookPoint())

    @torch.no_grad()
    def reset_parameters(self) -> None:
        cfg = self.cfg
        H = cfg.n_heads
        for lin in (self.in_proj, self.out_proj):
            lin.reset_parameters()
            if lin.bias is not None:
                lin.bias.zero_()
        self.conv1d.reset_parameters()
        if self.conv1d.bias is not None:
            self.conv1d.bias.zero_()
        if cfg.rescale_prenorm_residual:
            self.out_proj.weight /= math.sqrt(cfg.n_layers)
        lo, hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
        dt = torch.exp(torch.rand(H) * (hi - lo) + lo).clamp(min=cfg.dt_init_floor)
        self.dt_bias.copy_(_inv_softplus(dt))
        log_a = torch.log(torch.arange(1, H + 1, dtype=torch.float32))
        if cfg.gate == "time_invariant":  # a = exp(A): absorb a per-head initial step into A_log
            log_a = log_a + torch.log(dt)
        self.A_log.copy_(log_a)
        self.D.fill_(1.0)
        self.norm.weight.fill_(1.0)

    def forward(
        self,
        u: Float[Tensor, "B L D"],
        state: Optional[LayerState],
        edit_mode: str = "overwrite",
    ) -> tuple[Float[Tensor, "B L D"], LayerState]:
        cfg = self.cfg
        E, H, P, G, N, X = cfg.d_inner, cfg.n_heads, cfg.headdim, cfg.n_groups, cfg.d_state, cfg.conv_dim
        proj = self.hook_in_proj(self.in_proj(u))
        z, xBC, dt = proj.split([E, X, H], dim=-1)
        gate = self.hook_gate(F.silu(z))
        conv, new_window = causal_conv1d(xBC, state.conv if state is not None else None, self.conv1d.weight,
                                         self.conv1d.bias)
        xBC = self.hook_conv(F.silu(conv))
        x, Bm, Cm = xBC.split([E, G * N, G * N], dim=-1)
        xs = self.hook_ssm_input(x.unflatten(-1, (H, P)))
        Bm, Cm = self.hook_B(Bm.unflatten(-1, (G, N))), self.hook_C(Cm.unflatten(-1, (G, N)))
        delta = F.softplus(dt + self.dt_bias)
        if cfg.dt_limit is not None:
            delta = delta.clamp(*cfg.dt_limit)
        delta = self.hook_delta(delta)
        A = -torch.exp(self.A_log)
        h0 = state.ssm if state is not None else None
        y, h_last = self._ssm(xs, delta, A, Bm, Cm, h0, edit_mode)
        y = self.hook_y(y.flatten(-2))
        out = self.out_proj(self.norm(y, gate))
        return out, LayerState(conv=new_window, ssm=h_last)

    def _ssm(self, xs, delta, A, Bm, Cm, h0, edit_mode):
        cfg, D = self.cfg, self.D
        gate = cfg.gate
        sequential = cfg.scan == "sequential"
        recur = _scan.linear_recurrence_ref if sequential else _scan.linear_recurrence
        hp_a, hp_h = self.hook_a, self.hook_ssm_state
        a = None
        if _has_hooks(hp_a):
            a = _ssd.gate_values(delta, A, gate)
            a = a.contiguous() if not a.requires_grad else a.clone()  # safe to edit in place
            v = a._version
            a2 = hp_a(a)
            if a2 is not a or a._version != v:
                _scan.check_hook_output(a2, a, "hook_a")
                a = a2
        state_hooked = _has_hooks(hp_h)
        if not state_hooked and not _has_hooks(hp_a):
            if sequential:
                y, h = _ssd.ssd_scan_ref(xs, delta, A, Bm, Cm, D, h0, gate)
                return y, _last(h)
            return _ssd.ssd_scan(xs, delta, A, Bm, Cm, D, h0, gate, cfg.chunk_size)
        fast = None  # (y, h_last) of the chunked scan: still valid when the gates were not edited
        if a is None:
            a = _ssd.gate_values(delta, A, gate)
            if not sequential:
                fast = _ssd.ssd_scan(xs, delta, A, Bm, Cm, D, h0, gate, cfg.chunk_size)

        def states():
            if sequential:
                return recur(*_ssd.discretize(xs, delta, a, Bm), h0)
            return _ssd.ssd_states(xs, delta, a, Bm, h0)  # no full-size write term b

        h = states()
        h_seen = h
        if state_hooked:
            v = h._version
            h2 = hp_h(h)
            h = _scan.carry_state_edit(
                h, h2, v, h0, edit_mode,
                lambda t0: _ssd.discretize(xs[:, t0:], delta[:, t0:], a[:, t0:], Bm[:, t0:]), recur,
                recompute=states,
            )
        if fast is not None and h is h_seen:  # observed only: the chunked outputs (no per-step readout)
            return fast
        return _ssd.readout(h, Cm, xs, D), _last(h)


class Mamba2Block(MambaBlock):
    """``resid + Mamba2Mixer(RMSNorm(resid))`` with HookedMamba's residual hooks."""

    mixer_class = Mamba2Mixer


class HookedMamba2(HookedMamba):
    """Mamba-2 language model with TransformerLens hooks and HookedMamba's recurrent-state API
    (``HookedMamba2(cfg, seed=None)``; the embedding is drawn with ``initializer_range``, the mixers as HF's).

    ``model(tokens)`` -> logits ``[B, L, V]``; ``model(tokens, state, return_state=True)`` ->
    ``(logits, state)``; a prefix run with ``return_state=True`` continued from the returned state gives
    the logits of one run over the whole sequence.
    """

    config_class = Mamba2Config
    block_class = Mamba2Block

    def _state_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        c = self.cfg
        return {"conv": (batch, c.conv_dim, c.d_conv - 1), "ssm": (batch, c.n_heads, c.headdim, c.d_state)}

    @classmethod
    def from_hf(cls, model_or_state_dict: Any, **overrides: Any) -> "HookedMamba2":
        """Load ``transformers.Mamba2ForCausalLM`` (object or state dict; mamba-ssm naming works too).

        The config is read from the HF config when given a model (a state dict needs ``headdim`` and
        ``n_groups`` among ``overrides`` unless the defaults fit); ``overrides`` set other fields.
        """
        return from_hf(cls, model_or_state_dict, **overrides)

    @classmethod
    def from_pretrained(cls, path: Any, **overrides: Any) -> "HookedMamba2":
        """Load a saved ``Mamba2ForCausalLM`` (a directory or hub id, via ``transformers``)."""
        from transformers import Mamba2ForCausalLM

        return cls.from_hf(Mamba2ForCausalLM.from_pretrained(path), **overrides)

    def to_hf(self):
        """An equivalent ``transformers.Mamba2ForCausalLM`` (nonnegative gate only), float32, eval mode."""
        return to_hf(self)


__all__ = ["Mamba2Config", "HookedMamba2", "GatedRMSNorm", "GATES", "SCANS", "EDIT_MODES"]
