"""HookedMamba: Mamba-1 with every per-step quantity a TransformerLens ``HookPoint``.

Glossary (shapes):
    B  batch       L  pos          D  d_model        E  d_inner = expand * d_model
    N  d_state     R  dt_rank      K  d_conv         V  vocab_size

Architecture (as in the reference Mamba-1 / ``transformers.MambaForCausalLM``): embedding; per layer a
pre-norm residual block ``resid + mixer(RMSNorm(resid))``; final RMSNorm; LM head (tied by default).
The mixer::

    xz = in_proj(u)                       x, z = split(xz)               [B, L, E] each
    xc = SiLU(causal depthwise conv1d(x))                                [B, L, E]
    Δ, B, C = softplus(dt_proj(x_proj(xc)_Δ)), x_proj(xc)_B, x_proj(xc)_C
    h_t = a_t ∘ h_{t-1} + Δ_t B_t xc_t    (a_t: the gate, see hooks.scan)  [B, L, E, N]
    y_t = h_t C_t + D ∘ xc_t
    out = out_proj(y ∘ SiLU(z))

Hooks (length-independent names; the table with shapes is in ``docs/hooks_table.md``):
``hook_embed``, ``blocks.{l}.hook_resid_pre``, ``blocks.{l}.mixer.hook_{in_proj, gate, conv,
ssm_input, delta, B, C, a, ssm_state, ssm_state_flat, y}``, ``blocks.{l}.hook_resid_post``,
``hook_norm_final``, ``hook_logits``. ``hook_ssm_state_flat`` is ``hook_ssm_state`` seen as
``[B, L, E*N]`` (a view, same edit semantics; its hooks run after those of ``hook_ssm_state``): the
``[batch, pos, features]`` layout that pyvene's position interventions index.

Editing ``hook_ssm_state`` is a real intervention: the edit is carried forward by the recurrence.
After the hook runs (once, on the states computed without edits), the edited entries are those where
its output differs from its input. With the default ``ssm_state_edit = "overwrite"`` the result is
exactly the sequential loop::

    for t in range(L):  H_t = a_t ∘ H_{t-1} + b_t;  H_t[edited_t] = hook_output_t[edited_t]

i.e. the value the hook wrote at an edited entry *is* h_t there, and everything after it is recomputed
from it. Because the hook saw pre-edit states, a value it wrote at a later position t' replaces the
recomputed h_t' (right for patching in states from another run, zeroing, or setting constants). With
``ssm_state_edit = "add"`` the *difference* the hook made is added on top of the carried-forward state
(``H_t = a_t ∘ H_{t-1} + b_t + (hook_output_t - h_t)``), which is the sequential loop for additive
steering at several positions. With a single edited position both modes equal the loop that applies
the hook function at that step. With several hooks on one ``hook_ssm_state`` (e.g. an edit, then
``run_with_cache``'s caching hook), each sees the states carried after the edits of the hooks before
it, so a cache records the states the model actually used. Edits that return a new tensor let gradients flow into the written
values; in-place edits work too, but the written values are then treated as constants.

Cost: a hook that only observes (returns ``None`` without editing in place, e.g. caching) costs nothing.
A hook that returns a tensor triggers one more linear recurrence from the earliest edited position
(from position 0 when autograd is on, so that the gradient a backward hook sees at ``hook_ssm_state``
is the total derivative dL/dh_t, which includes the effect of h_t on all later states).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from hooks import _mamba_hf
from hooks import scan as _scan
from hooks.mamba_mixer import LayerState, MambaBlock, RMSNorm
from hooks.interop import LensInterop, SSMActivationCache, next_token_loss
from hooks.state import LayeredState

GATES = _scan.GATES
SCANS = ("auto", "fast", "sequential", "cuda")
EDIT_MODES = _scan.EDIT_MODES


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------


@dataclass
class MambaConfig:
    """Mamba-1 configuration. Derived: ``d_inner = expand * d_model``, ``d_vocab`` (padded vocab).

    ``dt_rank="auto"`` resolves to ``ceil(d_model / 16)``. ``gate`` picks the discretized gate (see
    :mod:`hooks.scan`); ``scan`` the scan path: ``"auto"`` (mamba-ssm's CUDA kernel when usable, else
    the fast scan), ``"fast"``, ``"sequential"`` (the reference loop), ``"cuda"`` (require mamba-ssm).
    The ``dt_*`` fields, ``initializer_range`` and ``rescale_prenorm_residual`` set the initialization
    as in the reference. ``pad_vocab_multiple`` pads the embedding rows (logits keep ``vocab_size``).

    For TransformerLens's analysis functions the config also answers ``device`` (the model's, kept in
    step by the model; not saved), ``n_heads = 0`` and ``n_key_value_heads = None`` (an SSM has no
    attention heads).
    """

    d_model: int
    n_layers: int
    vocab_size: int
    d_state: int = 16
    d_conv: int = 4
    expand: Union[int, float] = 2
    dt_rank: Union[int, str] = "auto"
    gate: str = "nonnegative"
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    pad_vocab_multiple: int = 1
    scan: str = "auto"
    bias: bool = False
    conv_bias: bool = True
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init: str = "random"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    initializer_range: float = 0.02
    rescale_prenorm_residual: bool = True
    d_inner: int = field(init=False)
    d_vocab: int = field(init=False)

    _DERIVED = ("d_inner", "d_vocab")

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "vocab_size", "d_state", "d_conv", "pad_vocab_multiple"):
            _check_positive_int(name, getattr(self, name))
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        _check_positive_int("dt_rank", self.dt_rank)
        if isinstance(self.expand, bool) or not isinstance(self.expand, (int, float)) or self.expand <= 0:
            raise ValueError(f"MambaConfig: expand must be a positive number, got {self.expand!r}")
        d_inner = self.expand * self.d_model
        if abs(d_inner - round(d_inner)) > 1e-9 or round(d_inner) < 1:
            raise ValueError(
                f"MambaConfig: expand * d_model must be a positive integer (d_inner), got "
                f"{self.expand!r} * {self.d_model} = {d_inner}"
            )
        self.d_inner = int(round(d_inner))
        m = self.pad_vocab_multiple
        self.d_vocab = -(-self.vocab_size // m) * m
        for name, allowed in (("gate", GATES), ("scan", SCANS), ("dt_init", ("random", "constant"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"MambaConfig: {name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("norm_eps", "dt_min", "dt_max", "dt_scale", "dt_init_floor", "initializer_range"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"MambaConfig: {name} must be a positive finite number, got {v!r}")
        if self.dt_min > self.dt_max:
            raise ValueError(f"MambaConfig: dt_min ({self.dt_min}) must be <= dt_max ({self.dt_max})")
        for name in ("tie_embeddings", "bias", "conv_bias", "rescale_prenorm_residual"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MambaConfig: {name} must be a bool, got {getattr(self, name)!r}")
        self.device = torch.device("cpu")  # not a field: the model sets it (TransformerLens reads it)

    n_heads = 0  # no attention heads (TransformerLens's patching functions read it)
    n_key_value_heads = None

    @property
    def d_ssm_state(self) -> int:
        """E * N: the size of one position's state, ``hook_ssm_state_flat``'s last dimension."""
        return self.d_inner * self.d_state

    def to_dict(self) -> dict[str, Any]:
        """All fields (derived ones included, for readers); :meth:`from_dict` accepts the result."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MambaConfig":
        """Inverse of :meth:`to_dict`. Unknown keys, or derived values that disagree, raise ``ValueError``."""
        return config_from_dict(cls, d)


def config_from_dict(cls, d: Mapping[str, Any], **convert: Any):
    """``cls`` (a config dataclass with derived fields ``cls._DERIVED``) from its ``to_dict()``; ``convert``
    maps a field to a function applied to its stored value when not None (e.g. a list back to a tuple).
    Unknown keys, or derived values that disagree with the rebuilt config, raise ``ValueError``."""
    init_names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(d) - init_names - set(cls._DERIVED)
    if unknown:
        raise ValueError(f"{cls.__name__}.from_dict: unknown keys {sorted(unknown)}")
    kw = {k: v for k, v in d.items() if k in init_names}
    for k, f in convert.items():
        if kw.get(k) is not None:
            kw[k] = f(kw[k])
    cfg = cls(**kw)
    for k in cls._DERIVED:
        if k in d and d[k] != getattr(cfg, k):
            raise ValueError(f"{cls.__name__}.from_dict: {k}={d[k]!r} is inconsistent with the config "
                             f"({k}={getattr(cfg, k)!r})")
    return cfg


def _check_positive_int(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"MambaConfig: {name} must be a positive integer, got {v!r}")


# ------------------------------------------------------------------------------------------------
# Recurrent state
# ------------------------------------------------------------------------------------------------


@dataclass
class MambaState(LayeredState):
    """Everything needed to continue a run: ``layers[l]`` is layer l's :class:`LayerState`.

    Swap one layer's state with another run's (``state.layers[l] = other.layers[l]``) for an
    interchange intervention on the recurrent model. ``clone``, ``detach``, ``to``, ``select`` and
    ``batch_size`` come from :class:`hooks.state.LayeredState`.
    """

    layers: list[LayerState] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


class HookedMamba(_scan.StateEditModes, LensInterop, HookedRootModule):
    """Mamba-1 language model with TransformerLens hooks and a recurrent-state API.

    ``model(tokens)`` -> logits ``[B, L, V]``; ``model(tokens, state, return_state=True)`` ->
    ``(logits, state)``. Running a prefix with ``return_state=True`` and then the suffix from the
    returned state gives the same logits as one run over the whole sequence.

    A new model is in eval mode (as Hugging Face's ``from_pretrained`` returns it; the model has no
    dropout, and training calls ``.train()``), so TransformerLens's patching functions
    (``transformer_lens.patching.get_act_patch_resid_pre(model, tokens, cache, metric)``) take it as
    is. ``run_with_cache`` returns an :class:`hooks.interop.SSMActivationCache`.
    """

    # What a subclass with another mixer swaps in (hooks.mamba2.HookedMamba2): its config class and block.
    config_class = MambaConfig
    block_class = MambaBlock

    def __init__(self, cfg: Union[MambaConfig, Mapping[str, Any]], seed: Optional[int] = None):
        super().__init__()
        cfg = self.config_class.from_dict(cfg) if not isinstance(cfg, self.config_class) else copy.copy(cfg)
        self.cfg = cfg  # a copy: cfg.device follows this model only
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList([self.block_class(cfg, layer) for layer in range(cfg.n_layers)])
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.hook_norm_final = HookPoint()
        self.lm_head = nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.hook_logits = HookPoint()
        self.ssm_state_edit: str = "overwrite"
        self.reset_parameters(seed)
        self.setup()
        self.eval()

    @torch.no_grad()
    def reset_parameters(self, seed: Optional[int] = None) -> None:
        """Reference initialization; with ``seed``, deterministic and independent of the global RNG."""
        ctx = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
        with ctx:
            if seed is not None:
                torch.manual_seed(seed)
            nn.init.normal_(self.embed.weight, std=self.cfg.initializer_range)
            if not self.cfg.tie_embeddings:
                nn.init.normal_(self.lm_head.weight, std=self.cfg.initializer_range)
            for block in self.blocks:
                block.norm.weight.fill_(1.0)
                block.mixer.reset_parameters()
            self.norm_f.weight.fill_(1.0)

    # -- state API ------------------------------------------------------------------------------------

    def init_state(self, batch_size: int, device=None, dtype=None) -> MambaState:
        """The all-zero state (what a run without a state starts from)."""
        p = self.embed.weight
        device, dtype = device or p.device, dtype or p.dtype
        shapes = self._state_shapes(batch_size)
        return MambaState(
            layers=[
                LayerState(**{k: torch.zeros(v, device=device, dtype=dtype) for k, v in shapes.items()})
                for _ in range(self.cfg.n_layers)
            ]
        )

    def _state_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        """Shapes of one layer's state tensors (``conv``: the conv's last inputs; ``ssm``: h)."""
        cfg = self.cfg
        return {"conv": (batch, cfg.d_inner, cfg.d_conv - 1), "ssm": (batch, cfg.d_inner, cfg.d_state)}

    # -- forward --------------------------------------------------------------------------------------

    def forward(
        self,
        tokens: Int[Tensor, "B L"],
        state: Optional[MambaState] = None,
        return_state: bool = False,
    ) -> Union[Float[Tensor, "B L V"], tuple[Float[Tensor, "B L V"], MambaState]]:
        cfg = self.cfg
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            got = f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be an integer tensor [batch, pos], got {got}")
        if tokens.shape[1] == 0:
            raise ValueError("tokens must have at least one position")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size):
            raise ValueError(f"token ids must lie in [0, {cfg.vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]")
        if self.ssm_state_edit not in EDIT_MODES:
            raise ValueError(f"ssm_state_edit must be one of {EDIT_MODES}, got {self.ssm_state_edit!r}")
        if state is not None:
            self._check_state(state, tokens.shape[0])
        resid = self.hook_embed(self.embed(tokens.long()))
        new_layers = []
        for layer, block in enumerate(self.blocks):
            resid, ls = block(resid, None if state is None else state.layers[layer], self.ssm_state_edit)
            new_layers.append(ls)
        resid = self.hook_norm_final(self.norm_f(resid))
        logits = self.lm_head(resid)
        if cfg.d_vocab != cfg.vocab_size:
            logits = logits[..., : cfg.vocab_size]
        logits = self.hook_logits(logits)
        if return_state:
            return logits, MambaState(layers=new_layers)
        return logits

    def _check_state(self, state: MambaState, batch: int) -> None:
        cfg = self.cfg
        if not isinstance(state, MambaState) or len(state.layers) != cfg.n_layers:
            raise ValueError(f"state must be a MambaState with {cfg.n_layers} layers")
        want = self._state_shapes(batch)
        for layer, ls in enumerate(state.layers):
            for name, shape in want.items():
                got = tuple(getattr(ls, name).shape)
                if got != shape:
                    raise ValueError(f"state.layers[{layer}].{name} has shape {got}, expected {shape}")

    # -- TransformerLens interface ---------------------------------------------------------------------

    def _check_hook_name(self, name: Any) -> None:
        if isinstance(name, str) and name not in self.mod_dict:
            attn = any(w in name for w in (".attn", "hook_attn", ".mlp", "hook_mlp", "resid_mid"))
            why = " (an attention/MLP activation: HookedMamba is a state space model without either)" if attn else ""
            raise ValueError(f"HookedMamba has no hook {name!r}{why}; hook names are listed by model.hook_dict "
                             "(e.g. blocks.0.hook_resid_pre, blocks.0.mixer.hook_ssm_state)")

    def check_hooks_to_add(self, hook_point_name, hook, *args, **kwargs) -> None:
        self._check_hook_name(hook_point_name)
        return super().check_hooks_to_add(hook_point_name, hook, *args, **kwargs)

    def _enable_hook_with_name(self, name, hook, dir):
        self._check_hook_name(name)
        return super()._enable_hook_with_name(name, hook, dir)

    def run_with_cache(self, *model_args: Any, names_filter=None, device=None, remove_batch_dim: bool = False,
                       incl_bwd: bool = False, reset_hooks_end: bool = True, clear_contexts: bool = False,
                       pos_slice=None, return_cache_object: bool = True, return_type: str = "logits",
                       loss_fn=None, **model_kwargs: Any):
        """TransformerLens's ``run_with_cache``; returns ``(output, SSMActivationCache)``.

        ``return_type="loss"`` returns the next-token cross-entropy instead of the logits (as in
        TransformerLens); ``loss_fn(logits) -> scalar`` any other scalar. ``incl_bwd=True`` runs
        backward on that scalar and caches the gradients under ``"<name>_grad"``.
        """
        if return_type not in ("logits", "loss"):
            raise ValueError(f"return_type must be 'logits' or 'loss', got {return_type!r}")
        if incl_bwd and return_type != "loss" and loss_fn is None:
            raise ValueError("incl_bwd=True needs a scalar to differentiate: pass return_type='loss' (next-token "
                             "cross-entropy, as in TransformerLens) or loss_fn=callable(logits) -> scalar")
        if remove_batch_dim and model_args and isinstance(model_args[0], Tensor) and model_args[0].shape[0] != 1:
            raise ValueError(f"remove_batch_dim=True needs a batch of 1, got {model_args[0].shape[0]}")
        from transformer_lens.utilities import Slice

        cache_dict, fwd, bwd = self.get_caching_hooks(
            names_filter, incl_bwd, device, remove_batch_dim=remove_batch_dim, pos_slice=Slice.unwrap(pos_slice)
        )
        with self.hooks(fwd_hooks=fwd, bwd_hooks=bwd, reset_hooks_end=reset_hooks_end, clear_contexts=clear_contexts):
            out = self(*model_args, **model_kwargs)
            logits = out[0] if isinstance(out, tuple) else out
            if return_type == "loss" or loss_fn is not None:
                tokens = model_args[0] if model_args else model_kwargs["tokens"]
                scalar = loss_fn(logits) if loss_fn is not None else next_token_loss(logits, tokens)
                if scalar.numel() != 1:
                    raise ValueError(f"loss_fn must return a scalar, got shape {tuple(scalar.shape)}")
                if incl_bwd:
                    scalar.backward()
                if return_type == "loss":
                    out = scalar if not isinstance(out, tuple) else (scalar, *out[1:])
        if not return_cache_object:
            return out, cache_dict
        return out, SSMActivationCache(cache_dict, self, has_batch_dim=not remove_batch_dim)

    # -- loading --------------------------------------------------------------------------------------

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` with errors that name the parameter and the config."""
        own = self.state_dict()
        bad = [
            f"  {k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in state_dict.items()
            if k in own and isinstance(v, Tensor) and tuple(v.shape) != tuple(own[k].shape)
        ]
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if self.cfg.tie_embeddings and "lm_head.weight" in missing and "embed.weight" in state_dict:
            missing.remove("lm_head.weight")  # tied: the embedding carries it
        problems = bad[:]
        if strict and missing:
            problems.append(f"  missing keys: {missing}")
        if strict and unexpected:
            problems.append(f"  unexpected keys: {unexpected}")
        if problems:
            raise ValueError(
                f"checkpoint does not fit {type(self).__name__}(" + _cfg_repr(self.cfg) + "):\n" + "\n".join(problems)
            )
        sd = dict(state_dict)
        if self.cfg.tie_embeddings and "lm_head.weight" not in sd and "embed.weight" in sd:
            sd["lm_head.weight"] = sd["embed.weight"]
        return super().load_state_dict(sd, strict=strict, assign=assign)

    @classmethod
    def from_hf(cls, model_or_state_dict: Any, **overrides: Any) -> "HookedMamba":
        """Load ``transformers.MambaForCausalLM`` (object or state dict; mamba-ssm naming works too; a
        path goes to :meth:`from_pretrained`).

        The config is read from the HF config when given a model, else inferred from tensor shapes;
        ``overrides`` set other :class:`MambaConfig` fields (e.g. ``norm_eps``, ``scan``).
        """
        return _mamba_hf.from_hf(cls, model_or_state_dict, **overrides)

    def to_hf(self):
        """An equivalent ``transformers.MambaForCausalLM`` (nonnegative gate only), in float32 eval mode."""
        return _mamba_hf.to_hf(self)

    @classmethod
    def from_pretrained(cls, path: Any, **overrides: Any) -> "HookedMamba":
        """Load a local Hugging Face Mamba-1 directory (``config.json`` + safetensors weights), a
        ``.safetensors`` file, or what :meth:`save_pretrained` wrote (vocabulary included). A hub id is
        fetched only when the hub is allowed and reachable; offline it is a clear error. Eval mode."""
        return _mamba_hf.from_pretrained(cls, path, **overrides)

    def save_pretrained(self, directory: Any):
        """Write the Hugging Face layout (``config.json`` + ``model.safetensors``), loadable by
        ``transformers.MambaForCausalLM.from_pretrained`` and :meth:`from_pretrained`; nonnegative gate only."""
        return _mamba_hf.save_pretrained(self, directory)


def _cfg_repr(cfg: MambaConfig) -> str:
    keys = ("d_model", "n_layers", "vocab_size", "d_state", "d_conv", "expand", "dt_rank", "headdim", "n_groups", "gate")
    return ", ".join(f"{k}={getattr(cfg, k)!r}" for k in keys if hasattr(cfg, k))


__all__ = ["MambaConfig", "HookedMamba", "MambaState", "LayerState", "GATES", "SCANS", "EDIT_MODES"]
