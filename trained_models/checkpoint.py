"""Checkpoints: safetensors weights + a JSON card, never pickle; every write atomic.

A run directory (``--out DIR`` of ``trained_models.train``) holds:

* ``model.safetensors`` + ``card.json`` -- the best weights so far and their card (what
  :func:`trained_models.load` reads);
* ``train_config.json`` -- the :class:`~trained_models.config.TrainConfig`;
* ``checkpoint/`` -- the last epoch's model, optimiser and schedule state for ``--resume``.

Loading never executes code: the card's ``model`` spec rebuilds the architecture and the tensors are
checked name by name and shape by shape against it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from trained_models.io import atomic_save_safetensors, atomic_write_json

WEIGHTS = "model.safetensors"
CARD = "card.json"


class CheckpointMismatch(ValueError):
    """A checkpoint's tensors do not fit the model its config describes."""


def save_model(model: torch.nn.Module, directory: str | Path, card: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` then ``card.json`` (with the weights' sha256) atomically."""
    directory = Path(directory)
    tensors = unique_state_dict(model)
    path = atomic_save_safetensors(directory / WEIGHTS, tensors)
    card = dict(card)
    card["weights"] = {"file": WEIGHTS, "sha256": sha256(path), "n_parameters": count_parameters(model)}
    atomic_write_json(directory / CARD, card)
    return directory


def load_weights(model: torch.nn.Module, path: str | Path, *, what: str = "") -> torch.nn.Module:
    """Load safetensors weights into ``model``, with a clear error on any mismatch."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no weights file at {path}")
    tensors = load_file(str(path))
    expected = {k: v for k, v in model.state_dict().items()}
    label = what or str(path)
    missing = sorted(set(expected) - set(tensors) - _tied_names(model))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointMismatch(
            f"checkpoint {label} does not match its config: "
            f"missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected tensors {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(expected[name].shape):
            raise CheckpointMismatch(
                f"checkpoint {label} does not match its config: tensor {name!r} has shape "
                f"{tuple(t.shape)} in the checkpoint but {tuple(expected[name].shape)} in the model the config builds"
            )
    model.load_state_dict(tensors, strict=False)
    return model


def read_card(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CARD
    if not path.exists():
        raise FileNotFoundError(f"no model card at {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"model card {path} is not valid JSON: {e}") from None


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def unique_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without aliases (tied weights are stored once; safetensors refuses shared memory)."""
    seen: dict[object, str] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else id(t)
        if key in seen:
            continue
        seen[key] = name
        out[name] = t
    return out


def _tied_names(model: torch.nn.Module) -> set[str]:
    sd = model.state_dict()
    return set(sd) - set(unique_state_dict(model))
