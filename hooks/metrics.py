"""Task metrics: the one home of the counts that every evaluation pools (README: task and metrics;
docs/interfaces.md).

Torch and :mod:`languages.vocab` only, so the lowest torch layer (``hooks``: the constructions' CLI)
and everything above it (``trained_models.evaluate``, ``probe.interchange``, the studies) count
the same way. A *batch* is anything with the fields of ``languages.datasets.Batch`` used below
(numpy arrays or tensors): ``tokens`` ``[B, L]``, ``mask`` ``[B, L]`` (True at the ``len(s) + 1`` real
positions of each row) and ``allowed`` ``[B, L, V]`` (the multi-hot of ``Language.allowed_next``, END
in column ``END_ID``). Every function takes ``decode``, how logits become probabilities:

* ``"sigmoid"`` (models trained on allowed sets, and the constructions): ``sigmoid`` per column; a
  symbol is allowed iff its probability exceeds 0.5 (``logit > 0``);
* ``"softmax"`` (next-symbol models, ``--loss lm``): ``softmax`` across the END and symbol columns; a
  symbol is allowed iff its probability exceeds :data:`SOFTMAX_THRESHOLD`.

The metrics, each with one name and one meaning:

* **strict accuracy** -- fraction of strings whose decoded set equals the target at every real
  position (:func:`strict_correct`); **position accuracy** -- fraction of real positions decoded right.
* **close accuracy** (Dyck(K, h), Yao et al. 2021) -- at every real position whose stack is non-empty
  (exactly one closing bracket allowed), correct iff ``p[correct close] / sum(p[closing brackets]) >
  0.8`` (:data:`CLOSE_THRESHOLD`); pooled over positions (:func:`close_counts`).
* **reads** (flip-flop, Liu et al. 2023) -- the positions whose last symbol read is ``r``; there the
  next symbol is the stored bit, and a read is *wrong* unless the more probable of the two bits is
  the allowed one (a tie counts as ``0``) (:func:`read_outcomes`).
* **glitch rate** -- fraction of *sequences* with at least one wrong read (SPEC's "glitch rate" / test
  error); **read error rate** -- fraction of *reads* that are wrong (wrong reads / reads).

Precision: decoded sets and reads compare probabilities in the logits' dtype; the close ratio is
computed from ``logits.double()`` (a ratio of small probabilities needs float64's range; the
denominator is clamped at 1e-300, which only matters when every closing probability underflows).

:class:`MetricAccumulator` pools the counts over batches into the result dict of
``trained_models.evaluate`` (and the constructions' CLI).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from languages.vocab import BOS_ID, END_ID, FIRST_OUTPUT_ID, PAD_ID, Vocab  # noqa: F401 (re-exported)

CLOSE_THRESHOLD = 0.8
#: ``decode="softmax"`` (models trained with ``--loss lm``): a symbol is allowed iff its next-symbol
#: probability exceeds this.
SOFTMAX_THRESHOLD = 0.05
DECODES = ("sigmoid", "softmax")

__all__ = [
    "allowed_from_logits",
    "output_probs",
    "position_correct",
    "strict_correct",
    "strict_accuracy",
    "close_ratio",
    "close_counts",
    "close_accuracy",
    "close_accuracy_counts",
    "read_outcomes",
    "MetricAccumulator",
    "describe",
    "CLOSE_THRESHOLD",
    "SOFTMAX_THRESHOLD",
]


def _t(x: Any, dtype: torch.dtype, device: Optional[torch.device] = None) -> Tensor:
    x = x.to(dtype) if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x), dtype=dtype)
    return x if device is None else x.to(device)


def output_probs(logits: Tensor, decode: str = "sigmoid") -> Tensor:
    """Per-symbol probabilities over the END + alphabet columns, ``[..., V - 2]`` (column ``k`` is
    token id ``k + FIRST_OUTPUT_ID``): ``sigmoid`` per column (models trained on allowed sets) or
    ``softmax`` across them (next-symbol models). float32 unless ``logits`` are float64."""
    out = logits[..., FIRST_OUTPUT_ID:]
    out = out if out.dtype == torch.float64 else out.float()
    if decode == "sigmoid":
        return torch.sigmoid(out)
    if decode == "softmax":
        return torch.softmax(out, dim=-1)
    raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")


def _decoded(probs: Tensor, decode: str) -> Tensor:
    return probs > (0.5 if decode == "sigmoid" else SOFTMAX_THRESHOLD)


def allowed_from_logits(logits: Tensor, vocab: Optional[Any] = None, decode: str = "sigmoid") -> Tensor:
    """Decoded allowed-next sets ``[..., V]`` (bool): ``sigmoid(logit) > 0.5``, i.e. ``logit > 0``
    (``decode="softmax"``: next-symbol probability above :data:`SOFTMAX_THRESHOLD`).

    PAD and BOS columns are always False. ``vocab`` (optional) checks the width: ``V == vocab.size``.
    """
    if vocab is not None and logits.shape[-1] != vocab.size:
        raise ValueError(f"logits have {logits.shape[-1]} columns, vocab has {vocab.size} ids")
    out = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    out[..., FIRST_OUTPUT_ID:] = _decoded(output_probs(logits, decode), decode)
    return out


def _mask_target(logits: Tensor, batch: Any) -> tuple[Tensor, Tensor]:
    mask = _t(batch.mask, torch.bool, logits.device)
    target = _t(batch.allowed, torch.bool, logits.device)
    if target.shape != logits.shape:
        raise ValueError(f"target {tuple(target.shape)} and logits {tuple(logits.shape)} differ")
    return mask, target


def position_correct(logits: Tensor, batch: Any, decode: str = "sigmoid") -> Tensor:
    """``[B, L]`` (bool): the decoded set equals the target at a real position (False at padding)."""
    mask, target = _mask_target(logits, batch)
    pred = _decoded(output_probs(logits, decode), decode)
    return (pred == target[..., FIRST_OUTPUT_ID:]).all(-1) & mask


def strict_correct(logits: Tensor, batch: Any, decode: str = "sigmoid") -> Tensor:
    """Per string ``[B]`` (bool): the decoded set equals the target at every real position."""
    mask = _t(batch.mask, torch.bool, logits.device)
    return (position_correct(logits, batch, decode) | ~mask).all(-1)


def strict_accuracy(logits: Tensor, batch: Any, decode: str = "sigmoid") -> float:
    """Fraction of the batch's strings predicted right at every position (strict accuracy)."""
    ok = strict_correct(logits, batch, decode)
    return float(ok.float().mean()) if ok.numel() else float("nan")


def close_ratio(logits: Tensor, close_ids: Sequence[int], decode: str = "sigmoid") -> Tensor:
    """``[..., K]`` float64: ``p[close_k] / sum_j p[close_j]`` for the closing brackets' token ids
    ``close_ids`` (probabilities from ``logits.double()``; denominator clamped at 1e-300)."""
    cols = torch.as_tensor(list(close_ids), device=logits.device) - FIRST_OUTPUT_ID
    p = output_probs(logits.double(), decode)[..., cols]
    return p / p.sum(-1, keepdim=True).clamp_min(1e-300)


def close_counts(logits: Tensor, batch: Any, close_ids: Sequence[int], decode: str = "sigmoid") -> tuple[int, int]:
    """(correct, total) over the real positions with exactly one closing bracket allowed (the stack
    is non-empty): correct iff that bracket's :func:`close_ratio` exceeds :data:`CLOSE_THRESHOLD`."""
    mask, target = _mask_target(logits, batch)
    ids = torch.as_tensor(list(close_ids), device=logits.device)
    want = target[..., ids]
    where = (want.sum(-1) == 1) & mask
    right = (close_ratio(logits, close_ids, decode) * want).sum(-1)
    return int(((right > CLOSE_THRESHOLD) & where).sum()), int(where.sum())


def close_token_ids(language: Any, vocab: Any) -> list[int]:
    """Token ids of the closing brackets of a bracket language (anything with ``pairs``)."""
    pairs = getattr(language, "pairs", None)
    if not pairs:
        raise ValueError(f"{getattr(language, 'name', language)!r} has no bracket pairs")
    return [vocab.encode(c)[0] for _, c in pairs]


def close_accuracy_counts(logits: Tensor, batch: Any, language: Any, vocab: Optional[Any] = None,
                          decode: str = "sigmoid") -> tuple[int, int]:
    """:func:`close_counts` for ``language``'s closing brackets (``vocab``: default its own)."""
    vocab = vocab if vocab is not None else Vocab(language.alphabet)
    return close_counts(logits, batch, close_token_ids(language, vocab), decode)


def close_accuracy(logits: Tensor, batch: Any, language: Any, vocab: Optional[Any] = None,
                   decode: str = "sigmoid") -> float:
    """Dyck close accuracy pooled over the batch's non-empty-stack positions (nan if there are none)."""
    correct, total = close_accuracy_counts(logits, batch, language, vocab, decode)
    return correct / total if total else float("nan")


def read_outcomes(logits: Tensor, batch: Any, read_id: int, bit_ids: Sequence[int],
                  decode: str = "sigmoid") -> tuple[Tensor, Tensor]:
    """Flip-flop reads: ``(is_read, wrong)``, both ``[B, L]`` bool. ``is_read``: real positions whose
    last symbol read (``tokens[:, i]``) is ``read_id``; ``wrong``: reads where the more probable of the
    two bits ``bit_ids`` (token ids of ``0`` and ``1``; a tie counts as the first) is not the allowed one."""
    mask, target = _mask_target(logits, batch)
    tokens = _t(batch.tokens, torch.long, logits.device)
    ids = torch.as_tensor(list(bit_ids), device=logits.device)
    is_read = tokens.eq(read_id) & mask
    pred = output_probs(logits, decode)[..., ids - FIRST_OUTPUT_ID].argmax(-1)
    want = target[..., ids].float().argmax(-1)  # exactly one bit is allowed after a read
    return is_read, is_read & (pred != want)


class MetricAccumulator:
    """Pools the metrics over batches of one evaluation set (close accuracy for Dyck(K, h), reads for
    flip-flop) into :meth:`result`'s dict."""

    def __init__(self, language: Any, vocab: Any, decode: str = "sigmoid") -> None:
        if decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
        self.decode = decode
        self.n = self.correct = self.positions = self.positions_correct = 0
        self.min_len: Optional[int] = None
        self.max_len: Optional[int] = None
        self.close_ids: Optional[list[int]] = None
        self.close_total = self.close_correct = 0
        self.read_id: Optional[int] = None
        self.bit_ids: Optional[list[int]] = None
        self.reads = self.wrong_reads = self.glitched = 0
        if getattr(language, "name", "") == "dyck":  # close accuracy is Dyck(K, h)'s metric
            self.close_ids = close_token_ids(language, vocab)
        if getattr(language, "name", "") == "flipflop":
            self.read_id = vocab.encode("r")[0]
            self.bit_ids = vocab.encode("01")

    def update(self, logits: Tensor, batch: Any) -> None:
        mask = _t(batch.mask, torch.bool, logits.device)
        pos_ok = position_correct(logits, batch, self.decode)
        self.positions += int(mask.sum())
        self.positions_correct += int(pos_ok.sum())
        self.n += len(batch.strings)
        self.correct += int((pos_ok | ~mask).all(-1).sum())
        lens = [len(s) for s in batch.strings] + [x for x in (self.min_len, self.max_len) if x is not None]
        self.min_len, self.max_len = min(lens), max(lens)
        if self.close_ids is not None:
            c, t = close_counts(logits, batch, self.close_ids, self.decode)
            self.close_correct += c
            self.close_total += t
        if self.read_id is not None:
            is_read, wrong = read_outcomes(logits, batch, self.read_id, self.bit_ids, self.decode)
            self.reads += int(is_read.sum())
            self.wrong_reads += int(wrong.sum())
            self.glitched += int(wrong.any(-1).sum())

    def result(self) -> dict[str, Any]:
        """``strict_accuracy``, ``position_accuracy``, ``n``, ``min_len``, ``max_len``; Dyck:
        ``close_accuracy``, ``close_positions``; flip-flop: ``glitch_rate``, ``read_error_rate``,
        ``reads``, ``wrong_reads`` (see the module docstring)."""
        out: dict[str, Any] = {
            "strict_accuracy": self.correct / max(self.n, 1),
            "position_accuracy": self.positions_correct / max(self.positions, 1),
            "n": self.n,
            "min_len": self.min_len,
            "max_len": self.max_len,
        }
        if self.close_ids is not None:
            out["close_accuracy"] = self.close_correct / max(self.close_total, 1)
            out["close_positions"] = self.close_total
        if self.read_id is not None:
            out["glitch_rate"] = self.glitched / max(self.n, 1)
            out["read_error_rate"] = self.wrong_reads / max(self.reads, 1)
            out["reads"] = self.reads
            out["wrong_reads"] = self.wrong_reads
        return out


_NAMES = (("strict_accuracy", "strict accuracy"), ("close_accuracy", "close accuracy"),
          ("glitch_rate", "glitch rate"), ("read_error_rate", "read error rate"))


def describe(result: dict[str, Any]) -> str:
    """One line of the metrics present in a result dict: ``strict accuracy 0.9500, close accuracy ...``."""
    return ", ".join(f"{label} {result[key]:.4f}" for key, label in _NAMES if key in result)
