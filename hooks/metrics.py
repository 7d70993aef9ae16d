"""Task metrics computed from logits over the shared vocabulary (SPEC §2-§3, docs/interfaces.md).

Torch only; nothing here imports :mod:`languages`. A *batch* is anything with the fields of
``languages.datasets.Batch`` used below (numpy arrays or tensors): ``tokens`` ``[B, L]``, ``mask``
``[B, L]`` (True at the ``len(s) + 1`` real positions of each row) and ``allowed`` ``[B, L, V]`` (the
multi-hot of ``Language.allowed_next``, END in column ``END_ID``). A *language* is anything with
``pairs`` (Dyck(K, h): the (open, close) symbol pairs); a *vocab* anything with ``encode``.

* :func:`allowed_from_logits` -- the decoded sets: ``sigmoid(logits) > 0.5`` on the END and symbol
  columns (or, ``decode="softmax"``, next-symbol probability > :data:`SOFTMAX_THRESHOLD`); the PAD and
  BOS columns are never allowed. :func:`output_probs` -- the probabilities themselves.
* :func:`strict_accuracy` -- fraction of strings whose decoded set is right at every position.
* :func:`close_accuracy` -- Dyck close accuracy (Yao et al. 2021): at every position whose stack is
  non-empty (exactly one closing bracket allowed), correct iff
  ``p[correct close] / sum(p[closing brackets]) > 0.8`` with ``p = sigmoid(logits)``; pooled.

The ``*_counts`` variants return numerators and denominators so that results pool over chunks.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

PAD_ID, BOS_ID, END_ID = 0, 1, 2
CLOSE_THRESHOLD = 0.8
#: ``decode="softmax"`` (models trained with ``--loss lm``): a symbol is allowed iff its next-symbol
#: probability exceeds this.
SOFTMAX_THRESHOLD = 0.05
DECODES = ("sigmoid", "softmax")

__all__ = [
    "allowed_from_logits",
    "output_probs",
    "strict_correct",
    "strict_accuracy",
    "close_accuracy",
    "close_accuracy_counts",
    "CLOSE_THRESHOLD",
]


def _t(x: Any, dtype: torch.dtype) -> Tensor:
    return x.to(dtype) if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x), dtype=dtype)


def output_probs(logits: Tensor, decode: str = "sigmoid") -> Tensor:
    """Per-symbol probabilities over the END + alphabet columns, ``[..., V - 2]``: ``sigmoid`` per
    column (models trained on allowed sets) or ``softmax`` across them (next-symbol models)."""
    out = logits[..., END_ID:]
    out = out if out.dtype == torch.float64 else out.float()
    if decode == "sigmoid":
        return torch.sigmoid(out)
    if decode == "softmax":
        return torch.softmax(out, dim=-1)
    raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")


def allowed_from_logits(logits: Tensor, vocab: Optional[Any] = None, decode: str = "sigmoid") -> Tensor:
    """Decoded allowed-next sets ``[B, L, V]`` (bool): ``sigmoid(logit) > 0.5``, i.e. ``logit > 0``
    (``decode="softmax"``: next-symbol probability above :data:`SOFTMAX_THRESHOLD`).

    PAD and BOS columns are always False. ``vocab`` (optional) checks the width: ``V == vocab.size``.
    """
    if vocab is not None and logits.shape[-1] != vocab.size:
        raise ValueError(f"logits have {logits.shape[-1]} columns, vocab has {vocab.size} ids")
    out = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    out[..., END_ID:] = output_probs(logits, decode) > (0.5 if decode == "sigmoid" else SOFTMAX_THRESHOLD)
    return out


def strict_correct(logits: Tensor, batch: Any) -> Tensor:
    """Per string ``[B]`` (bool): the decoded set equals the target at every real position."""
    mask = _t(batch.mask, torch.bool).to(logits.device)
    target = _t(batch.allowed, torch.bool).to(logits.device)
    if target.shape != logits.shape:
        raise ValueError(f"target {tuple(target.shape)} and logits {tuple(logits.shape)} differ")
    pred = allowed_from_logits(logits)
    pos_ok = (pred[..., END_ID:] == target[..., END_ID:]).all(-1)
    return (pos_ok | ~mask).all(-1)


def strict_accuracy(logits: Tensor, batch: Any) -> float:
    """Fraction of the batch's strings predicted right at every position (SPEC §2)."""
    ok = strict_correct(logits, batch)
    return float(ok.float().mean()) if ok.numel() else float("nan")


def _close_ids(language: Any, vocab: Any) -> list[int]:
    pairs = getattr(language, "pairs", None)
    if not pairs:
        raise ValueError(f"{getattr(language, 'name', language)!r} has no bracket pairs")
    return [vocab.encode(c)[0] for _, c in pairs]


def close_accuracy_counts(logits: Tensor, batch: Any, language: Any, vocab: Optional[Any] = None,
                          decode: str = "sigmoid") -> tuple[int, int]:
    """(correct, total) over the positions with a non-empty stack (one closing bracket allowed)."""
    if vocab is None:
        from languages.datasets import Vocab  # a lazy import: the metric itself needs no languages

        vocab = Vocab(language.alphabet)
    ids = torch.tensor(_close_ids(language, vocab), device=logits.device)
    mask = _t(batch.mask, torch.bool).to(logits.device)
    target = _t(batch.allowed, torch.bool).to(logits.device)[..., ids]
    where = (target.sum(-1) == 1) & mask
    p = output_probs(logits.double(), decode)[..., ids - END_ID]
    ratio = (p * target).sum(-1) / p.sum(-1).clamp_min(1e-300)
    return int(((ratio > CLOSE_THRESHOLD) & where).sum()), int(where.sum())


def close_accuracy(logits: Tensor, batch: Any, language: Any, vocab: Optional[Any] = None,
                   decode: str = "sigmoid") -> float:
    """Dyck close accuracy pooled over the batch's non-empty-stack positions (nan if there are none)."""
    correct, total = close_accuracy_counts(logits, batch, language, vocab, decode)
    return correct / total if total else float("nan")
