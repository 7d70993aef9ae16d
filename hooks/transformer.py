"""Tiny causal Transformers for character prediction, built with TransformerLens 4.x.

Glossary (shapes): B batch, L pos (sequence length), D d_model, H n_heads, Dh d_head = D / H,
M d_mlp, V vocab_size.

How the model is built
----------------------
TransformerLens 4 removed ``HookedTransformer``; a small randomly initialised model is a
``TransformerBridge`` around TransformerLens's own ``NativeModel`` (no Hugging Face, no hub access):

* ``pos_encoding="learned"``: exactly ``TransformerBridge.boot_native(TransformerBridgeConfig(...))``.
* ``pos_encoding="sinusoidal"`` / ``"none"``: ``NativeModel`` only knows ``positional_embedding_type``
  ``"standard"`` (learned) and ``"rotary"``, so ``boot_native`` cannot build these. We take the
  same three steps ``boot_native`` takes (``NativeModel(cfg)``, ``initialize_native_model``,
  ``build_bridge_from_module(model, "TransformerLensNative", tl_config=cfg)``, all public names of
  ``transformer_lens.model_bridge.sources``) and change the position module in between:
  ``"sinusoidal"`` swaps the learned table for a fixed sine/cosine table (a non-persistent buffer,
  so no parameter and nothing in the state dict); ``"none"`` removes it (``NativeModel.forward``
  skips a ``None`` ``pos``) and drops the ``pos_embed`` slot from the adapter's component mapping
  through ``build_bridge_from_module``'s ``post_adapter_hook`` (the documented place to edit
  ``component_mapping``). The bridge config then says ``positional_embedding_type="none"``, the
  value TransformerLens's own adapters use for models without one. With ``"none"`` the causal
  mask is the only source of positional information. Token, attention, MLP and unembedding
  weights are identical for the three variants at one seed.

:class:`HookedTransformerLM` wraps the bridge (``.bridge``) so ``.cfg`` is our
:class:`TransformerConfig` (what checkpoints and cards store) while ``run_with_cache``,
``run_with_hooks``, ``hooks(...)``, ``hook_dict`` and every other bridge attribute work on the wrapper
(they are forwarded to the bridge). ``state_dict()`` has TransformerLens keys
(``embed.weight``, ``blocks.0.attn.q.weight``, ...), no aliased tensors, and saves with
``safetensors.torch.save_file`` as is.

Hook names (TransformerLens conventions; ``docs/transformer_hooks.md`` has the full list)
-------------------------------------------------------------------------------------------
==============================  ==============================  =====================
name used by this project       bridge's canonical hook         shape
==============================  ==============================  =====================
``hook_embed``                  ``embed.hook_out``              [B, L, D]
``hook_pos_embed``              ``pos_embed.hook_out``          [B, L, D] (absent for "none")
``blocks.{l}.hook_resid_pre``   ``blocks.{l}.hook_in``          [B, L, D]
``blocks.{l}.hook_resid_mid``   ``blocks.{l}.ln2.hook_in``      [B, L, D]
``blocks.{l}.hook_resid_post``  ``blocks.{l}.hook_out``         [B, L, D]
``blocks.{l}.hook_attn_out``    ``blocks.{l}.attn.hook_out``    [B, L, D]
``blocks.{l}.hook_mlp_out``     ``blocks.{l}.mlp.hook_out``     [B, L, D]
``blocks.{l}.attn.hook_q/k/v``  ``blocks.{l}.attn.q/k/v.hook_out``  [B, L, H, Dh]
``blocks.{l}.attn.hook_z``      ``blocks.{l}.attn.o.hook_in``   [B, L, H, Dh]
``blocks.{l}.attn.hook_pattern``  (itself)                    [B, H, L, L]
``blocks.{l}.mlp.hook_pre/post``  ``blocks.{l}.mlp.in.hook_out`` / ``out.hook_in``  [B, L, M]
``hook_norm_final``             ``ln_final.hook_out``           [B, L, D]   (added here)
``hook_logits``                 ``unembed.hook_out``            [B, L, V]   (added here)
==============================  ==============================  =====================

All but the last two are the bridge's own aliases; the last two are added per model (as
bridge-level ``hook_aliases``) so every model in the project answers the same names. Aliases
resolve to the canonical ``HookPoint``: ``run_with_cache(names_filter=[...alias...])`` returns the
activation under the alias (and also under the canonical name); a callable filter sees every name.
Edits at these hooks propagate, except ``hook_resid_mid``: in the bridge it is ``ln2``'s input, so
an edit there reaches the MLP but not the residual carried forward (patch ``hook_attn_out``
instead).

Key/value cache
---------------
``model(tokens, state=cache, return_state=True)`` continues from a prefix's keys and values; the
cache and the function behind it are :mod:`hooks.kv_cache`.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from hooks.interop import LensInterop
from hooks.kv_cache import KVCache, run_with_kv

POS_ENCODINGS = ("learned", "sinusoidal", "none")
ACT_FNS = ("gelu", "gelu_new", "relu", "silu")
NORMALIZATIONS = ("LN", "LNPre", "RMS", "RMSPre", "none")

#: Hook names this project adds on top of the bridge's own aliases.
EXTRA_HOOK_ALIASES: dict[str, str] = {
    "hook_norm_final": "ln_final.hook_out",
    "hook_logits": "unembed.hook_out",
}

_INT_FIELDS = ("d_model", "n_layers", "n_heads", "vocab_size", "d_mlp", "n_ctx", "seed")


@dataclass
class TransformerConfig:
    """A tiny causal Transformer (pre-LN, GPT-2-style blocks).

    ``pos_encoding``: ``"learned"`` (absolute, trained table), ``"sinusoidal"`` (fixed sine/cosine
    table, Vaswani et al.), ``"none"`` (causal masking only). ``normalization``: ``"LN"``,
    ``"LNPre"`` (no learned scale), ``"RMS"``, ``"RMSPre"``, ``"none"``. ``d_mlp`` defaults to
    ``4 * d_model``. ``seed`` fixes the initial weights (the caller's global RNG is untouched).
    """

    d_model: int
    n_layers: int
    n_heads: int
    vocab_size: int
    d_mlp: Optional[int] = None
    n_ctx: int = 2048
    pos_encoding: str = "learned"
    act_fn: str = "gelu"
    normalization: str = "LN"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.d_mlp is None and isinstance(self.d_model, int) and not isinstance(self.d_model, bool):
            self.d_mlp = 4 * self.d_model
        problems = []
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"{name} must be an int, got {value!r} ({type(value).__name__})")
            elif name == "seed":
                if value < 0:
                    problems.append(f"seed must be >= 0, got {value}")
            elif value < 1:
                problems.append(f"{name} must be >= 1, got {value}")
        if problems:
            raise ValueError("invalid TransformerConfig: " + "; ".join(problems))
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"invalid TransformerConfig: d_model={self.d_model} is not divisible by "
                f"n_heads={self.n_heads} (d_head would be {self.d_model / self.n_heads:g})"
            )
        if self.pos_encoding not in POS_ENCODINGS:
            raise ValueError(
                f"invalid TransformerConfig: pos_encoding={self.pos_encoding!r}; expected one of {POS_ENCODINGS}"
            )
        if self.pos_encoding == "sinusoidal" and self.d_model % 2:
            raise ValueError(
                f"invalid TransformerConfig: sinusoidal positions need an even d_model, got {self.d_model}"
            )
        if self.act_fn not in ACT_FNS:
            raise ValueError(f"invalid TransformerConfig: act_fn={self.act_fn!r}; expected one of {ACT_FNS}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"invalid TransformerConfig: normalization={self.normalization!r}; expected one of {NORMALIZATIONS}"
            )
        self.device = torch.device("cpu")  # not a field: the model keeps it in step (TransformerLens reads it)

    n_key_value_heads = None  # plain multi-head attention (TransformerLens's patching functions read it)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_vocab(self) -> int:
        """TransformerLens's name for ``vocab_size``."""
        return self.vocab_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerConfig":
        if not isinstance(d, dict):
            raise TypeError(f"TransformerConfig.from_dict expects a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TransformerConfig field(s) {unknown}; known fields: {sorted(known)}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in d]
        if missing:
            raise ValueError(f"TransformerConfig is missing required field(s) {missing}")
        return cls(**d)

    def bridge_config(self):
        """The ``TransformerBridgeConfig`` handed to TransformerLens (learned positions)."""
        from transformer_lens import TransformerBridgeConfig

        return TransformerBridgeConfig(
            d_model=self.d_model,
            d_head=self.d_head,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            n_ctx=self.n_ctx,
            d_vocab=self.vocab_size,
            d_mlp=self.d_mlp,
            act_fn=self.act_fn,
            normalization_type=None if self.normalization == "none" else self.normalization,
            positional_embedding_type="standard",
            attention_dir="causal",
            init_mode="gpt2",
            seed=self.seed,
            model_name="automata-lens-transformer",
            default_prepend_bos=False,
            tokenizer_prepends_bos=False,
        )


class SinusoidalPositions(nn.Module):
    """Fixed sine/cosine positional table: ``pe[t, 2i] = sin(t / 10000^(2i/D))``, ``pe[t, 2i+1] = cos(...)``.

    Stored as a non-persistent buffer named ``weights`` (the name ``PosEmbedBridge.W_pos`` looks
    up for sinusoidal tables): no parameter, not in the state dict, rebuilt from the config.
    """

    weights: Tensor

    def __init__(self, n_ctx: int, d_model: int):
        super().__init__()
        self.register_buffer("weights", sinusoidal_table(n_ctx, d_model), persistent=False)

    def forward(self, position_ids: Int[Tensor, "B L"]) -> Float[Tensor, "B L D"]:
        return self.weights[position_ids]


def sinusoidal_table(n_ctx: int, d_model: int) -> Float[Tensor, "n_ctx D"]:
    pos = torch.arange(n_ctx, dtype=torch.float64)[:, None]
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.zeros(n_ctx, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq)
    return table.float()


def _boot_bridge(cfg: TransformerConfig):
    """Build the ``TransformerBridge`` for ``cfg`` (see the module docstring)."""
    from transformer_lens import TransformerBridge

    bcfg = cfg.bridge_config()
    if cfg.pos_encoding == "learned":
        return TransformerBridge.boot_native(bcfg)

    from transformer_lens.model_bridge.sources import build_bridge_from_module
    from transformer_lens.model_bridge.sources.native import NativeModel, initialize_native_model

    # What boot_native does: build + seeded init with the caller's RNG left alone.
    with torch.random.fork_rng(devices=[]):
        native = NativeModel(copy.deepcopy(bcfg))
        initialize_native_model(native, bcfg)
    post_adapter_hook = None
    if cfg.pos_encoding == "sinusoidal":
        native.pos = SinusoidalPositions(cfg.n_ctx, cfg.d_model)
    else:  # "none"
        native.pos = None
        bcfg.positional_embedding_type = "none"

        def post_adapter_hook(adapter) -> None:
            adapter.component_mapping.pop("pos_embed", None)

    return build_bridge_from_module(
        native,
        "TransformerLensNative",
        tl_config=bcfg,
        model_name=bcfg.model_name,
        post_adapter_hook=post_adapter_hook,
    )


class HookedTransformerLM(LensInterop, nn.Module):
    """A TransformerLens 4 causal LM over our vocabulary: ``tokens [B, L] -> logits [B, L, V]``.

    The ``TransformerBridge`` is ``self.bridge``; hook methods (``run_with_cache``,
    ``run_with_hooks``, ``hooks``, ``hook_dict``, ``reset_hooks``, ...) and any other attribute
    not defined here (``blocks``, ``embed``, ``W_E``...) are the bridge's. A new model is in eval
    mode (training calls ``.train()``), so TransformerLens's patching functions take it as returned;
    ``to_tokens``/``to_string`` go through the language's vocabulary (:mod:`hooks.interop`).
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        cfg = TransformerConfig.from_dict(cfg) if isinstance(cfg, dict) else copy.copy(cfg)
        self.cfg = cfg  # a copy: cfg.device follows this model only
        self.bridge = _boot_bridge(cfg)
        self.bridge.hook_aliases = {**type(self.bridge).hook_aliases, **EXTRA_HOOK_ALIASES}
        self.bridge._register_aliases()
        self.eval()

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("__") or name == "bridge":
                raise
            bridge = self._modules.get("bridge")
            if bridge is None:
                raise
            return getattr(bridge, name)

    # ---- running ----

    def check_tokens(self, tokens: Tensor) -> Int[Tensor, "B L"]:
        if not isinstance(tokens, Tensor):
            raise TypeError(f"tokens must be a torch.Tensor of ids, got {type(tokens).__name__}")
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"tokens must be an integer tensor, got dtype {tokens.dtype}")
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
        if tokens.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds n_ctx={self.cfg.n_ctx}")
        if tokens.numel():
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.cfg.vocab_size:
                raise ValueError(f"token ids must lie in [0, {self.cfg.vocab_size}); got min {lo}, max {hi}")
        return tokens.long()

    def forward(
        self,
        tokens: Int[Tensor, "B L"],
        state: Optional[KVCache] = None,
        return_state: bool = False,
    ):
        """Logits ``[B, L, V]``; with ``state`` (a :class:`KVCache`), continue after that prefix;
        with ``return_state=True``, also return the cache after this run (``(logits, state)``)."""
        if state is None and not return_state:
            return self.bridge(self.check_tokens(tokens))
        return run_with_kv(self, tokens, state, return_kv=return_state)

    def run_with_cache(self, tokens, *args, **kwargs):
        return self.bridge.run_with_cache(self.check_tokens(tokens), *args, **kwargs)

    def run_with_hooks(self, tokens, *args, **kwargs):
        return self.bridge.run_with_hooks(self.check_tokens(tokens), *args, **kwargs)

    def hooks(self, *args, **kwargs):
        return self.bridge.hooks(*args, **kwargs)

    @property
    def hook_dict(self):
        return self.bridge.hook_dict

    # ---- parameters and checkpoints ----

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """Parameters under their state-dict names (``embed.weight``, ``blocks.0.attn.q.weight``...)."""
        named = [
            (prefix + name, t)
            for name, t in self.bridge.state_dict(keep_vars=True).items()
            if isinstance(t, nn.Parameter)
        ]
        tree = {id(p) for _, p in super().named_parameters()}
        if not recurse or {id(p) for _, p in named} != tree or len(named) != len(tree):
            # Defensive: never hide a parameter the module tree has.
            yield from super().named_parameters(prefix, recurse, remove_duplicate)
            return
        yield from named

    def state_dict(self, *args, **kwargs):  # type: ignore[override]
        """TransformerLens-format keys (``embed.weight``, ``blocks.0.attn.q.weight``...); no aliases."""
        if args or kwargs.get("destination") is not None or kwargs.get("prefix"):
            return super().state_dict(*args, **kwargs)
        return self.bridge.state_dict(keep_vars=kwargs.get("keep_vars", False))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        """Load a :meth:`state_dict`; any missing/unexpected name or wrong shape is a ``ValueError``
        naming it (with ``strict=False`` missing/unexpected names are allowed, shapes still checked)."""
        expected = self.bridge.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if strict and (missing or unexpected):
            raise ValueError(
                f"state dict does not match this TransformerConfig ({self.cfg}): "
                f"missing {missing}, unexpected {unexpected}"
            )
        for name, t in state_dict.items():
            if name in expected and tuple(t.shape) != tuple(expected[name].shape):
                raise ValueError(
                    f"state dict does not match this TransformerConfig ({self.cfg}): tensor {name!r} has "
                    f"shape {tuple(t.shape)}, the config builds {tuple(expected[name].shape)}"
                )
        known = {k: v for k, v in state_dict.items() if k in expected}
        return self.bridge.load_state_dict(known, strict=strict, assign=assign)


def build_transformer(cfg: TransformerConfig | dict) -> HookedTransformerLM:
    """A freshly initialised :class:`HookedTransformerLM` (deterministic for ``cfg.seed``)."""
    return HookedTransformerLM(cfg)


def hook_names(model: HookedTransformerLM) -> list[str]:
    """Every hook name the model answers (canonical names and aliases), sorted."""
    return sorted(model.bridge.hook_dict)


__all__ = [
    "TransformerConfig",
    "HookedTransformerLM",
    "build_transformer",
    "hook_names",
    "SinusoidalPositions",
    "sinusoidal_table",
    "EXTRA_HOOK_ALIASES",
    "POS_ENCODINGS",
    "ACT_FNS",
    "NORMALIZATIONS",
]
