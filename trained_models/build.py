"""Build a model from a JSON-able spec: ``{"family": ..., "config": {...}}``.

Families:
* ``mamba``        -- :class:`hooks.HookedMamba` from a :class:`hooks.MambaConfig` dict.
* ``mamba2``       -- :class:`hooks.HookedMamba2` from a :class:`hooks.Mamba2Config` dict.
* ``transformer``  -- a TransformerLens 4 model from a :class:`hooks.TransformerConfig` dict.
* ``construction`` -- a hand-built SSM from :mod:`hooks.constructions` (``config``: ``{"name", "params"}``).

The spec is what a model card stores, so ``build_model(card["model"])`` rebuilds the architecture
without executing anything from the checkpoint.
"""
from __future__ import annotations

from typing import Any

import torch

from hooks import constructions
from hooks.mamba import HookedMamba, MambaConfig
from hooks.mamba2 import HookedMamba2, Mamba2Config
from hooks.transformer import TransformerConfig, build_transformer

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

