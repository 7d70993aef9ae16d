"""Build a model from a JSON-able spec: ``{"family": ..., "config": {...}}``.

Families:
* ``mamba``        -- :class:`hooks.HookedMamba` from a :class:`hooks.MambaConfig` dict.
* ``mamba2``       -- :class:`hooks.HookedMamba2` from a :class:`hooks.Mamba2Config` dict.
* ``transformer``  -- a TransformerLens 4 model from a :class:`hooks.TransformerConfig` dict.
* ``construction`` -- a hand-built SSM from :mod:`hooks.constructions` (``config``: ``{"name", "params"}``).

The spec is what a model card stores, so ``build_model(card["model"])`` rebuilds the architecture
without executing anything from the checkpoint; :func:`model_spec` is the spec a training config asks for.
"""
from __future__ import annotations

from typing import Any

import torch

from hooks import constructions
from hooks.mamba import HookedMamba, MambaConfig
from hooks.mamba2 import HookedMamba2, Mamba2Config
from hooks.transformer import TransformerConfig, build_transformer
from trained_models.config import TrainConfig, resolve_windows

FAMILIES = ("mamba", "mamba2", "transformer", "construction")
# Families whose layer l has a recurrent state at ``blocks.{l}.mixer.hook_ssm_state`` and a gate.
MAMBA_FAMILIES = ("mamba", "mamba2")


def build_model(spec: dict[str, Any]) -> torch.nn.Module:
    family = spec.get("family")
    config = spec.get("config", {})
    if family == "mamba":
        return HookedMamba(MambaConfig.from_dict(config))
    if family == "mamba2":
        return HookedMamba2(Mamba2Config.from_dict(config))
    if family == "transformer":
        return build_transformer(TransformerConfig.from_dict(config))
    if family == "construction":
        return build_construction(config["name"], **config.get("params", {})).model
    raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")


def build_construction(name: str, **params: Any):
    """The construction for a language name (``dyck``, ``flipflop``, ``parity``, counters)."""
    return constructions.build(name, **params)


def model_spec(cfg: TrainConfig, vocab_size: int, language: Any = None) -> dict[str, Any]:
    """The JSON spec that :func:`trained_models.build.build_model` turns into the model.

    A Transformer's context covers the longest string of every window it is trained or tested on
    (plus BOS), and at least 2048 positions."""
    if cfg.model == "mamba":
        mc = MambaConfig(
            d_model=cfg.d_model,
            n_layers=cfg.layers,
            vocab_size=vocab_size,
            d_state=cfg.d_state,
            d_conv=cfg.d_conv,
            expand=cfg.expand,
            gate=cfg.gate,
            **({"dt_min": cfg.dt_init[0], "dt_max": cfg.dt_init[1]} if cfg.dt_init else {}),
        )
        return {"family": "mamba", "config": mc.to_dict()}
    if cfg.model == "mamba2":
        m2 = Mamba2Config(
            d_model=cfg.d_model, n_layers=cfg.layers, vocab_size=vocab_size, d_state=cfg.d_state,
            d_conv=cfg.d_conv, expand=cfg.expand, gate=cfg.gate, headdim=cfg.headdim,
            **({"dt_min": cfg.dt_init[0], "dt_max": cfg.dt_init[1]} if cfg.dt_init else {}),
        )
        return {"family": "mamba2", "config": m2.to_dict()}
    windows = [cfg.train_window or (0, 0), *(cfg.test_windows or {}).values()]
    if language is not None:
        train, tests = resolve_windows(cfg, language)
        windows += [train, *tests.values()]
    n_ctx = max(2048, max(hi for _, hi in windows) + 1)
    tc = TransformerConfig(
        d_model=cfg.d_model,
        n_layers=cfg.layers,
        n_heads=cfg.n_heads,
        vocab_size=vocab_size,
        n_ctx=n_ctx,
        pos_encoding=cfg.pos_encoding,
        seed=cfg.seed,
    )
    return {"family": "transformer", "config": tc.to_dict()}
