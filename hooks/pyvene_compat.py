"""pyvene's model card for this project's models: which module each pyvene component names.

pyvene looks a model's components up by type in ``pyvene.models.intervenable_modelcard``'s
``type_to_module_mapping`` / ``type_to_dimension_mapping``. :func:`register` adds
:class:`hooks.HookedMamba` and :class:`hooks.HookedTransformerLM`; it runs by itself when pyvene asks
a model for its ``config`` (``model.config``, see :class:`hooks.interop.LensInterop`), so
``pyvene.IntervenableModel(config, model)`` works on the models as they are, no shims. The model
classes are named here by their import path, not imported (they import this module through
:class:`hooks.interop.LensInterop`); a subclass is covered by the class it derives from.

Components (``RepresentationConfig(layer, component, unit="pos")``):

=====================================  ==========================================  ===========
component                              HookedMamba                                 dimension
=====================================  ==========================================  ===========
``block_input`` / ``resid_pre``        ``blocks[l].hook_resid_pre``                d_model
``block_output`` / ``resid_post``      ``blocks[l].hook_resid_post``               d_model
``ssm_state``                          ``blocks[l].mixer.hook_ssm_state_flat``     E * N
``in_proj``, ``gate``, ``conv``,       ``blocks[l].mixer.hook_<name>``             2E, E, E,
``ssm_input``, ``delta``, ``B``,                                                   E, E, N,
``C``, ``y``                                                                       N, E
=====================================  ==========================================  ===========

``ssm_state`` is the state as ``[B, L, E*N]`` (pyvene's position units index ``[batch, pos,
features]``); an edit there is carried forward by the recurrence like any ``hook_ssm_state`` edit.
The Transformer: ``block_input``/``resid_pre``, ``block_output``/``resid_post``,
``attention_output``, ``mlp_output`` (the bridge's ``blocks[l].hook_in``, ``hook_out``,
``attn.hook_out``, ``mlp.hook_out``; dimension d_model).
"""
from __future__ import annotations

import sys

_MIXER_DIMS = {"in_proj": "d_inner*2", "gate": "d_inner", "conv": "d_inner", "ssm_input": "d_inner",
               "delta": "d_inner", "B": "d_state", "C": "d_state", "y": "d_inner"}
_registered: set[type] = set()


MAMBA, TRANSFORMER = "hooks.mamba.HookedMamba", "hooks.transformer.HookedTransformerLM"


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _mappings() -> dict[str, tuple[dict, dict]]:
    """``{class path: (component -> module, component -> dimension)}`` for pyvene's type tables."""
    from pyvene.models.constants import CONST_OUTPUT_HOOK as OUT

    mamba = {
        "block_input": ("blocks[%s].hook_resid_pre", OUT),
        "block_output": ("blocks[%s].hook_resid_post", OUT),
        "ssm_state": ("blocks[%s].mixer.hook_ssm_state_flat", OUT),
        **{name: (f"blocks[%s].mixer.hook_{name}", OUT) for name in _MIXER_DIMS},
    }
    transformer = {
        "block_input": ("bridge.blocks[%s].hook_in", OUT),
        "block_output": ("bridge.blocks[%s].hook_out", OUT),
        "attention_output": ("bridge.blocks[%s].attn.hook_out", OUT),
        "mlp_output": ("bridge.blocks[%s].mlp.hook_out", OUT),
    }
    for table in (mamba, transformer):  # TransformerLens's names for the same two sites
        table["resid_pre"], table["resid_post"] = table["block_input"], table["block_output"]
    transformer_dims = {name: ("d_model",) for name in transformer}
    mamba_dims = {**{name: ("d_model",) for name in ("block_input", "block_output", "resid_pre", "resid_post")},
                  "ssm_state": ("d_ssm_state",), **{name: (dim,) for name, dim in _MIXER_DIMS.items()}}
    return {MAMBA: (mamba, mamba_dims), TRANSFORMER: (transformer, transformer_dims)}


def register(model_class: type) -> None:
    """Add ``model_class``'s model (:class:`hooks.HookedMamba`, :class:`hooks.HookedTransformerLM`, or the
    one of them it derives from) to pyvene's type tables (idempotent; needs pyvene)."""
    cls = next((c for c in model_class.__mro__ if _path(c) in (MAMBA, TRANSFORMER)), None)
    if cls is None or cls in _registered:
        return
    from pyvene.models import intervenable_modelcard as card

    modules, dims = _mappings()[_path(cls)]
    card.type_to_module_mapping.setdefault(cls, modules)
    card.type_to_dimension_mapping.setdefault(cls, dims)
    _registered.add(cls)


def register_if_loaded(model_class: type) -> None:
    """:func:`register` when pyvene has been imported (a model never imports pyvene itself)."""
    if "pyvene" in sys.modules:
        register(model_class)


__all__ = ["register", "register_if_loaded"]
