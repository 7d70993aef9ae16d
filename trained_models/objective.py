"""What training minimises and how: the loss, the dev metric that selects the weights, AdamW's parameter
groups, the learning-rate schedule and the length-bucketed batches (used by :mod:`trained_models.training`)."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from languages.vocab import FIRST_OUTPUT_ID
from trained_models.config import TrainConfig
from trained_models.evaluate import TorchBatch


def selection_metric(language: Any, result: dict[str, Any]) -> float:
    """The dev score that selects the weights: close accuracy for Dyck(K, h), one minus the read-error
    rate for flip-flop, strict accuracy otherwise."""
    if "close_accuracy" in result:
        return result["close_accuracy"]
    if "glitch_rate" in result:
        return 1.0 - result["glitch_rate"]
    return result["strict_accuracy"]


def bucket_batches(strings: list[str], batch_size: int) -> list[list[str]]:
    """Batches of strings of similar length (sorted by length, so a batch pads little)."""
    order = sorted(strings, key=lambda s: (len(s), s))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def loss_fn(logits: torch.Tensor, tb: TorchBatch, loss: str) -> torch.Tensor:
    """``bce``: mean over positions of the mean per-symbol BCE against the allowed-next set; ``lm``:
    next-symbol cross-entropy; ``bce+lm``: their sum (the sets stay sigmoid-decodable while the
    cross-entropy gives the sharp which-symbol-next signal, e.g. which bracket closes)."""
    mask = tb.mask
    total = logits.new_zeros(())
    if loss in ("bce", "bce+lm"):
        out = logits[..., FIRST_OUTPUT_ID:]
        target = tb.allowed[..., FIRST_OUTPUT_ID:].to(out.dtype)
        per = F.binary_cross_entropy_with_logits(out, target, reduction="none").mean(-1)
        total = total + (per * mask).sum() / mask.sum()
    if loss in ("lm", "bce+lm"):
        out = logits.reshape(-1, logits.shape[-1])
        tgt = tb.next_tokens.masked_fill(~mask, -100).reshape(-1)
        total = total + F.cross_entropy(out, tgt, ignore_index=-100)
    return total


def no_decay(name: str, p: torch.nn.Parameter) -> bool:
    """Whether ``decay="matrices"`` exempts a parameter: vectors (biases, norm gains, ``D``) and
    Mamba's ``A_log`` (a matrix whose decay would pull every eigenvalue towards exp(-dt))."""
    return p.ndim < 2 or name.split(".")[-1] == "A_log"


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups: one decayed group, plus an undecayed one under ``decay="matrices"``.
    Parameters shared by several modules (tied embeddings) appear once."""
    named = list(model.named_parameters())  # deduplicates tied parameters
    if cfg.decay == "all":
        return [{"params": [p for _, p in named], "weight_decay": cfg.weight_decay}]
    return [{"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0}]


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``cfg.warmup_steps``, then cosine decay to a tenth of ``cfg.lr`` at ``total``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
