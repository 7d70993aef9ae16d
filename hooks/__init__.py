"""Hook-instrumented sequence models whose every per-step quantity is a TransformerLens ``HookPoint``.

Public names are imported lazily so that ``import hooks`` stays cheap and a submodule's heavy
dependencies (transformer-lens, transformers) load only when used.

* :class:`MambaConfig`, :class:`HookedMamba`, :class:`MambaState` -- Mamba-1 (``hooks.mamba``).
* :class:`Mamba2Config`, :class:`HookedMamba2` -- Mamba-2 (``hooks.mamba2``; its scan: ``hooks.ssd``).
* :mod:`hooks.scan` -- the selective scan: sequential reference and fast path.
* :class:`DiagonalSSMConfig`, :class:`HookedDiagonalSSM` -- the theory's diagonal SSM (``hooks.diagonal``).
* :mod:`hooks.constructions` -- the paper's hand-built SSMs.
* :class:`TransformerConfig`, :func:`build_transformer` -- tiny TransformerLens 4 models (``hooks.transformer``).
* :mod:`hooks.kv_cache` -- their key/value cache: continue from a prefix, swap a layer's keys and values.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "MambaConfig": "hooks.mamba",
    "HookedMamba": "hooks.mamba",
    "MambaState": "hooks.mamba",
    "Mamba2Config": "hooks.mamba2",
    "HookedMamba2": "hooks.mamba2",
    "DiagonalSSMConfig": "hooks.diagonal",
    "HookedDiagonalSSM": "hooks.diagonal",
    "TransformerConfig": "hooks.transformer",
    "HookedTransformerLM": "hooks.transformer",
    "build_transformer": "hooks.transformer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hooks' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
