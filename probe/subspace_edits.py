"""Subspace interventions along probe directions, each a context manager over ``model.hooks``.

:func:`steer` adds ``amount`` units of a probe's readout along its minimum-norm direction at one
hook site and position (the recurrence carries the edit forward); :func:`patch_subspace` copies only
the span of given directions from a source activation, :func:`patch_full` the whole activation;
:func:`ablate_subspace` replaces the span by its mean (mean-projection ablation);
:func:`random_subspace` gives a same-rank control. Each restores the model on exit.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch


def _positions_index(positions: Optional[Sequence[int] | int]) -> Any:
    if positions is None:
        return slice(None)
    if isinstance(positions, int):
        return [positions]
    return list(positions)


def _flat_apply(act: torch.Tensor, positions: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` to ``act[:, positions]`` flattened to ``[B, P, F]``; returns the edited copy."""
    out = act.clone()
    sel = out[:, positions]
    shape = sel.shape
    edited = fn(sel.reshape(shape[0], shape[1], -1).to(torch.float64)).reshape(shape).to(act.dtype)
    out[:, positions] = edited
    return out


def _orthonormal(directions: np.ndarray | torch.Tensor) -> torch.Tensor:
    d = torch.as_tensor(np.asarray(directions, dtype=np.float64))
    if d.ndim == 1:
        d = d[None]
    q, r = torch.linalg.qr(d.T)
    rank = int((r.diagonal().abs() > 1e-10 * r.diagonal().abs().max()).sum())
    return q[:, :rank].T  # [k, F]


@contextlib.contextmanager
def steer(model: torch.nn.Module, site: str, direction: np.ndarray | torch.Tensor, amount: float,
          positions: Optional[Sequence[int] | int] = None) -> Iterator[torch.nn.Module]:
    """Add ``amount * direction / |direction|^2`` at ``site`` (so a linear readout ``w.x`` moves by
    ``amount`` when ``direction = w``), at ``positions`` (default all)."""
    w = torch.as_tensor(np.asarray(direction, dtype=np.float64)).flatten()
    delta = amount * w / (w @ w)
    pos = _positions_index(positions)

    def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
        return _flat_apply(act, pos, lambda x: x + delta)

    with model.hooks(fwd_hooks=[(site, hook)]):
        yield model


@contextlib.contextmanager
def ablate_subspace(model: torch.nn.Module, site: str, directions: np.ndarray | torch.Tensor,
                    mean: np.ndarray | torch.Tensor, positions: Optional[Sequence[int] | int] = None
                    ) -> Iterator[torch.nn.Module]:
    """Mean-projection ablation: ``x <- x - P (x - mean)`` with ``P`` the projector on the span."""
    q = _orthonormal(directions)
    mu = torch.as_tensor(np.asarray(mean, dtype=np.float64)).flatten()
    pos = _positions_index(positions)

    def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
        return _flat_apply(act, pos, lambda x: x - ((x - mu) @ q.T) @ q)

    with model.hooks(fwd_hooks=[(site, hook)]):
        yield model


@contextlib.contextmanager
def patch_subspace(model: torch.nn.Module, site: str, directions: np.ndarray | torch.Tensor,
                   source_act: torch.Tensor, positions: Optional[Sequence[int] | int] = None
                   ) -> Iterator[torch.nn.Module]:
    """Replace the span of ``directions`` of ``site`` by the source activation's component.

    ``source_act`` has the site's shape (``[B, L, ...]``); ``directions=None``-like full patching is
    :func:`patch_full`.
    """
    q = _orthonormal(directions)
    pos = _positions_index(positions)
    src = source_act.detach()

    def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
        s = src[:, pos]
        s = s.reshape(s.shape[0], s.shape[1], -1).to(torch.float64)

        def edit(x: torch.Tensor) -> torch.Tensor:
            return x + ((s - x) @ q.T) @ q

        return _flat_apply(act, pos, edit)

    with model.hooks(fwd_hooks=[(site, hook)]):
        yield model


@contextlib.contextmanager
def patch_full(model: torch.nn.Module, site: str, source_act: torch.Tensor,
               positions: Optional[Sequence[int] | int] = None) -> Iterator[torch.nn.Module]:
    """Replace the whole activation of ``site`` at ``positions`` by the source's."""
    pos = _positions_index(positions)
    src = source_act.detach()

    def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
        out = act.clone()
        out[:, pos] = src[:, pos].to(act.dtype)
        return out

    with model.hooks(fwd_hooks=[(site, hook)]):
        yield model


def random_subspace(dim: int, rank: int, seed: int = 0) -> np.ndarray:
    """``rank`` random orthonormal directions in ``R^dim`` (the same-rank control)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, rank)))
    return q.T
