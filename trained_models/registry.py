"""Load models by name: the shipped checkpoints, any run directory, or a construction.

``load(name)`` returns ``(model, card)``. Shipped models live in ``trained_models/shipped/<name>/``
as ``model.safetensors`` + ``card.json``; the card's ``model`` spec rebuilds the architecture (no
code is ever loaded from a checkpoint) and the weights are checked against it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

import torch

from trained_models.build import build_construction, build_model
from trained_models.checkpoint import CARD, WEIGHTS, load_weights, read_card, verify_hash

SHIPPED = Path(__file__).resolve().parent / "shipped"


def names() -> list[str]:
    """The shipped models' names."""
    if not SHIPPED.is_dir():
        return []
    return sorted(p.name for p in SHIPPED.iterdir() if (p / CARD).exists() and (p / WEIGHTS).exists())


def load(name_or_dir: str | Path, *, verify: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A shipped model by name, or a run directory; returns ``(model in eval mode, card)``.

    The card must name the model spec and the language; the weights must match the card's sha256,
    the model's tensor names, shapes and dtypes, and be finite (``verify=False`` skips the hash and
    finiteness checks, for weights edited on purpose)."""
    directory = resolve(name_or_dir)
    card = read_card(directory)
    for key in ("model", "language"):
        if not isinstance(card.get(key), dict):
            raise ValueError(f"model card {directory / CARD} has no {key!r} entry")
    if not isinstance(card["language"].get("name"), str):
        raise ValueError(f"model card {directory / CARD} names no language ('language': {{'name': ...}})")
    if verify:
        verify_hash(card, directory / WEIGHTS)
    try:
        model = build_model(card["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"model card {directory / CARD}: cannot build its 'model' spec ({e})") from None
    load_weights(model, directory / WEIGHTS, what=str(directory / WEIGHTS), verify=verify)
    model.eval()
    alphabet = (card.get("language") or {}).get("alphabet")
    if alphabet and hasattr(model, "set_vocab"):
        model.set_vocab(alphabet)  # model.to_tokens / to_string through the language's vocabulary
    # Identity recorded by probe.collect (and so in saved collections): name and the card's hash.
    model.model_name = directory.name
    model.card_sha256 = hashlib.sha256((directory / CARD).read_bytes()).hexdigest()
    return model, card


def load_any(spec: str, *, language: Optional[str] = None, K: Optional[int] = None,
             h: Optional[int] = None, verify: bool = True) -> tuple[torch.nn.Module, Optional[dict[str, Any]]]:
    """``construction:NAME`` builds a construction (card None); anything else goes to :func:`load`."""
    if spec.startswith("construction:"):
        name = spec.split(":", 1)[1] or (language or "")
        params = {k: v for k, v in (("K", K), ("h", h)) if v is not None} if name == "dyck" else {}
        return build_construction(name, **params).model, None
    return load(spec, verify=verify)


def resolve(name_or_dir: str | Path) -> Path:
    """The folder of a run directory or shipped model; ``FileNotFoundError`` listing the shipped ones."""
    p = Path(name_or_dir)
    if (p / CARD).exists():
        return p
    if (SHIPPED / str(name_or_dir) / CARD).exists():
        return SHIPPED / str(name_or_dir)
    available = ", ".join(names()) or "none shipped yet"
    raise FileNotFoundError(f"no model {str(name_or_dir)!r}: not a run directory with {CARD}, "
                            f"and not a shipped model (available: {available})")
