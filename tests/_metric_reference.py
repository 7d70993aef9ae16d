"""The independent reference of the task metrics (used by test_metrics.py and test_trained_models.py).

A plain-Python loop over ``Language.allowed_next`` with its own decoding (``math.exp`` per column for
``sigmoid``, a hand-written normalisation for ``softmax``), in float64; nothing of :mod:`hooks.metrics`
or of the vocabulary layout beyond "logit columns: PAD, BOS, END, then the alphabet" is reused.
"""
from __future__ import annotations

import math

import torch

import languages
from hooks.metrics import SOFTMAX_THRESHOLD


def _probs(row: list[float], decode: str) -> list[float]:
    """Probabilities of the END + symbol logits of one position, by hand, in float64."""
    if decode == "sigmoid":
        return [1.0 / (1.0 + math.exp(-z)) for z in row]
    top = max(row)
    e = [math.exp(z - top) for z in row]
    return [x / sum(e) for x in e]


def reference_metrics(language, strings, logits: torch.Tensor, decode: str) -> dict:
    """Every metric by explicit loops over ``allowed_next`` (logits columns: PAD, BOS, END, alphabet)."""
    out_syms = [languages.END] + list(language.alphabet)
    thr = 0.5 if decode == "sigmoid" else SOFTMAX_THRESHOLD
    closes = [c for _, c in getattr(language, "pairs", None) or []]
    z = logits.double().numpy()
    correct = pos = pos_ok = close_tot = close_ok = reads = wrong_reads = glitched = 0
    for b, s in enumerate(strings):
        ok = True
        glitch = False
        for i, target in enumerate(language.allowed_next(s)):
            p = dict(zip(out_syms, _probs(list(z[b, i, 2:]), decode)))
            right = {sym for sym in out_syms if p[sym] > thr} == set(target)
            ok &= right
            pos += 1
            pos_ok += right
            allowed_closes = [c for c in closes if c in target]
            if language.name == "dyck" and len(allowed_closes) == 1:
                close_tot += 1
                close_ok += p[allowed_closes[0]] / sum(p[c] for c in closes) > 0.8
            if language.name == "flipflop" and i > 0 and s[i - 1] == "r":
                want = [c for c in "01" if c in target][0]
                guess = "0" if p["0"] >= p["1"] else "1"  # a tie reads as 0
                reads += 1
                wrong_reads += guess != want
                glitch |= guess != want
        correct += ok
        glitched += glitch
    n = len(strings)
    out = {"strict_accuracy": correct / n, "position_accuracy": pos_ok / pos}
    if language.name == "dyck":
        out.update(close_accuracy=close_ok / close_tot, close_positions=close_tot)
    if language.name == "flipflop":
        out.update(glitch_rate=glitched / n, read_error_rate=wrong_reads / reads, reads=reads,
                   wrong_reads=wrong_reads)
    return out
