"""The recurrent state of a layered model, shared by :class:`hooks.mamba.MambaState` and
:class:`hooks.diagonal.DiagonalSSMState`.

``layers[l]`` is layer l's state object: anything with ``ssm`` (a tensor whose first dimension is the
batch) and ``_map(fn)`` (the same state with ``fn`` applied to every tensor). Swapping
``state.layers[l]`` with another run's is an interchange intervention on layer l.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LayeredState:
    """Per-layer recurrent state with the tensor-wise methods every state offers."""

    layers: list[Any] = field(default_factory=list)

    def _map(self, fn):
        return type(self)(layers=[ls._map(fn) for ls in self.layers])

    def clone(self):
        return self._map(lambda t: t.clone())

    def detach(self):
        return self._map(lambda t: t.detach())

    def to(self, *args, **kwargs):
        return self._map(lambda t: t.to(*args, **kwargs))

    def select(self, index):
        """Batch rows ``index`` (an int keeps a batch dim of 1, a slice/tensor selects rows)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self._map(lambda t: t[index])

    @property
    def batch_size(self) -> int:
        return self.layers[0].ssm.shape[0]
