"""Checkpoints: safetensors weights + a JSON card, never pickle; every write atomic.

A run directory (``--out DIR`` of ``trained_models.train``) holds:

* ``model.safetensors`` + ``card.json`` -- the best weights so far and their card (what
  :func:`trained_models.load` reads);
* ``train_config.json`` -- the :class:`~trained_models.config.TrainConfig`;
* ``checkpoint/`` -- the last epoch's model, optimiser and schedule state for ``--resume``.

Loading never executes code: the card's ``model`` spec rebuilds the architecture and the tensors are
checked name by name, shape by shape and dtype by dtype against it, and must be finite;
:func:`trained_models.load` also checks the weights file against the sha256 its card records
(``verify=False`` / ``--no-verify`` skips the hash and finiteness checks, for weights edited on purpose).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from languages.io import atomic_save_safetensors, atomic_write_json

WEIGHTS = "model.safetensors"
CARD = "card.json"


class CheckpointMismatch(ValueError):
    """A checkpoint's tensors do not fit the model its config describes."""


class CheckpointCorrupt(ValueError):
    """A weights file that cannot be read, differs from the hash its card records, or holds NaN/inf."""


def save_model(model: torch.nn.Module, directory: str | Path, card: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` then ``card.json`` (with the weights' sha256) atomically."""
    directory = Path(directory)
    tensors = unique_state_dict(model)
    path = atomic_save_safetensors(directory / WEIGHTS, tensors)
    card = dict(card)
    card["weights"] = {"file": WEIGHTS, "sha256": sha256(path), "n_parameters": count_parameters(model)}
    atomic_write_json(directory / CARD, card)
    return directory


def load_weights(model: torch.nn.Module, path: str | Path, *, what: str = "", verify: bool = True
                 ) -> torch.nn.Module:
    """Load safetensors weights into ``model``, with a clear error naming the file on any mismatch:
    names, shapes and dtypes must be the model's, and (unless ``verify=False``) every value finite."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no weights file at {path}")
    tensors = read_tensors(path)
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
        if t.dtype != expected[name].dtype:
            raise CheckpointMismatch(f"checkpoint {label}: tensor {name!r} is {t.dtype}, the model's is "
                                     f"{expected[name].dtype}")
        if verify and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointCorrupt(f"checkpoint {label}: tensor {name!r} holds {bad} non-finite values "
                                    f"(NaN/inf); pass --no-verify (verify=False) to load it anyway")
    model.load_state_dict(tensors, strict=False)
    return model


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; an unreadable file is a :class:`CheckpointCorrupt` naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointCorrupt(f"cannot read weights file {path}: {' '.join(str(e).split())}") from None


def verify_hash(card: dict[str, Any], path: str | Path) -> None:
    """The weights file's sha256 must be the one the card records (cards without one are not checked)."""
    want = (card.get("weights") or {}).get("sha256") if isinstance(card.get("weights"), dict) else None
    if want and sha256(path) != want:
        raise CheckpointCorrupt(f"weights file {path} does not match the sha256 its card records (damaged or "
                                f"edited after saving); pass --no-verify (verify=False) to load it anyway")


def read_card(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CARD
    if not path.exists():
        raise FileNotFoundError(f"no model card at {path}")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"model card {path} is not valid JSON: {e}") from None
    if not isinstance(card, dict):
        raise ValueError(f"model card {path} is not a JSON object")
    return card


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
