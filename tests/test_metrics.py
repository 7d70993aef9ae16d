"""hooks.metrics, the one home of the task metrics: every count against an independent reference.

The reference is a plain-Python loop over ``Language.allowed_next`` with its own decoding (``math.exp``
per column for ``sigmoid``, a hand-written normalisation for ``softmax``), so neither the vocabulary
layout nor the tensor code of the module is reused; plus hand-computed cases for the edges.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import languages
from _metric_reference import reference_metrics
from hooks import metrics
from languages.datasets import encode_batch
from languages.vocab import FIRST_SYMBOL_ID, Vocab


def _noisy_logits(language, strings, noise: float, seed: int, level: float = 3.0):
    """Logits that encode the true allowed sets (``±level`` plus noise), a fraction of positions flipped."""
    batch = encode_batch(language, strings)
    rng = np.random.default_rng(seed)
    allowed = batch.allowed.astype(np.float32)
    logits = np.where(allowed > 0, level, -level) + rng.normal(0, 0.5, allowed.shape)
    flip = rng.random(allowed.shape[:2]) < noise
    logits[flip, 2:] *= -1
    return torch.tensor(logits, dtype=torch.float32), batch


@pytest.mark.parametrize("decode", ["sigmoid", "softmax"])
@pytest.mark.parametrize("name,params,lo,hi", [("dyck", {"K": 3, "h": 4}, 10, 40), ("flipflop", {}, 20, 40),
                                              ("tomita3", {}, 5, 20)])
def test_every_count_matches_a_loop_over_allowed_next(name, params, lo, hi, decode):
    language = languages.get(name, **params)
    strings = language.sample(40, lo, hi, seed=3)
    # softmax: a larger gap, so that the softmax-decoded sets are right where nothing was flipped
    logits, batch = _noisy_logits(language, strings, noise=0.05, seed=1, level=3.0 if decode == "sigmoid" else 8.0)
    acc = metrics.MetricAccumulator(language, Vocab(language.alphabet), decode)
    acc.update(logits[:17], encode_batch(language, strings[:17]))  # pooled over two batches
    acc.update(logits[17:, : max(map(len, strings[17:])) + 1], encode_batch(language, strings[17:]))
    res = acc.result()
    ref = reference_metrics(language, strings, logits, decode)
    assert {k: res[k] for k in ref} == pytest.approx(ref)
    assert (res["n"], res["min_len"], res["max_len"]) == (40, min(map(len, strings)), max(map(len, strings)))
    assert 0 < res["strict_accuracy"] < 1  # the noise makes some strings wrong, some right
    assert metrics.strict_accuracy(logits, batch, decode) == pytest.approx(ref["strict_accuracy"])
    if name == "dyck":
        assert metrics.close_accuracy(logits, batch, language, decode=decode) == pytest.approx(ref["close_accuracy"])
        assert 0 < ref["close_accuracy"] < 1
    if name == "flipflop":
        assert 0 < ref["read_error_rate"] < ref["glitch_rate"] < 1  # two different fractions


def test_strict_correct_uses_its_decoding():
    """One position whose sigmoid and softmax decodings differ: the verdict follows ``decode``."""
    language = languages.get("dyck", K=1, h=2)  # ids: PAD, BOS, END, '(', ')'
    batch = encode_batch(language, ["()"])  # allowed: {'(', END}, {'(', ')'}, {'(', END}
    logits = torch.full((1, 3, 5), -9.0)
    logits[0, 0, 2:4] = 9.0  # position 0: END and '(' (softmax: 0.5 each)
    logits[0, 1, 3:] = torch.tensor([1.0, 1.0])  # position 1: '(' and ')' (softmax: 0.5 each)
    logits[0, 2, 2:] = torch.tensor([-1.0, 2.0, -1.0])  # position 2: {'(', END} allowed; sigmoid: '(' only
    assert metrics.strict_correct(logits, batch, "sigmoid").tolist() == [False]
    # softmax over END, '(', ')' at position 2: e^-1, e^2, e^-1 -> END has 0.045 < 0.05: still wrong
    assert metrics.strict_correct(logits, batch, "softmax").tolist() == [False]
    logits[0, 2, 2:] = torch.tensor([1.0, 1.5, -9.0])  # sigmoid: both > 0.5; softmax: 0.38 / 0.62
    assert metrics.strict_correct(logits, batch, "sigmoid").tolist() == [True]
    assert metrics.strict_correct(logits, batch, "softmax").tolist() == [True]
    logits[0, 2, 2:] = torch.tensor([-0.5, 3.0, -9.0])  # sigmoid: END rejected; softmax: END 0.029
    assert metrics.strict_correct(logits, batch, "softmax").tolist() == [False]
    logits[0, 2, 2:] = torch.tensor([-0.5, 0.5, -9.0])  # sigmoid: END rejected; softmax: END 0.27 kept
    assert metrics.strict_correct(logits, batch, "sigmoid").tolist() == [False]
    assert metrics.strict_correct(logits, batch, "softmax").tolist() == [True]


def test_close_ratio_by_hand_and_where_float32_underflows():
    language = languages.get("dyck", K=2, h=2)  # '(', ')', '[', ']': close ids 4 and 6
    vocab = Vocab(language.alphabet)
    ids = metrics.close_token_ids(language, vocab)
    assert ids == [FIRST_SYMBOL_ID + 1, FIRST_SYMBOL_ID + 3]
    logits = torch.zeros(1, 1, 7)
    logits[0, 0, 4], logits[0, 0, 6] = 2.0, -1.0
    s = [1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))]
    assert metrics.close_ratio(logits, ids, "sigmoid")[0, 0].tolist() == pytest.approx([s[0] / sum(s), s[1] / sum(s)])
    assert metrics.close_ratio(logits, ids, "softmax")[0, 0].tolist() == pytest.approx(
        [math.exp(3) / (math.exp(3) + 1), 1 / (math.exp(3) + 1)])
    # Both closing logits far below zero: float32 sigmoids underflow to 0, float64 keeps the ratio
    # e^-120 / (e^-120 + e^-125) = 0.9933 > 0.8 (the correct close at '(' + ')' is ')': id 4).
    batch = encode_batch(language, ["("])
    z = torch.full((1, 2, 7), -120.0)
    z[0, 1, 6] = -125.0
    assert float(torch.sigmoid(z[0, 1, 4])) == 0.0
    assert metrics.close_counts(z, batch, ids, "sigmoid") == (1, 1)
    assert metrics.close_ratio(z, ids, "sigmoid")[0, 1, 0] == pytest.approx(1 / (1 + math.exp(-5)))


def test_reads_by_hand():
    """Two flip-flop strings; the wrong reads are set by hand, a tie reads as 0."""
    language = languages.get("flipflop")
    vocab = Vocab(language.alphabet)
    strings = ["w1r1i0r1", "w0r0r0i1"]
    batch = encode_batch(language, strings)
    logits = torch.where(torch.as_tensor(batch.allowed), 4.0, -4.0)
    one, zero = vocab.encode("1")[0], vocab.encode("0")[0]
    logits[0, 4, [zero, one]] = torch.tensor([5.0, 1.0])  # after the first 'r' of string 0: reads 0 (wrong)
    logits[1, 6, [zero, one]] = torch.tensor([2.0, 2.0])  # after the second 'r' of string 1: a tie, reads 0 (right)
    is_read, wrong = metrics.read_outcomes(logits, batch, vocab.encode("r")[0], vocab.encode("01"))
    assert is_read.nonzero().tolist() == [[0, 3], [0, 7], [1, 3], [1, 5]]
    assert wrong.nonzero().tolist() == []  # the edited positions are not reads: position i has read s[:i]
    logits = torch.where(torch.as_tensor(batch.allowed), 4.0, -4.0)
    logits[0, 3, [zero, one]] = torch.tensor([5.0, 1.0])
    logits[1, 5, [zero, one]] = torch.tensor([2.0, 2.0])
    is_read, wrong = metrics.read_outcomes(logits, batch, vocab.encode("r")[0], vocab.encode("01"))
    assert wrong.nonzero().tolist() == [[0, 3]]
    acc = metrics.MetricAccumulator(language, vocab)
    acc.update(logits, batch)
    r = acc.result()
    assert (r["reads"], r["wrong_reads"], r["glitch_rate"], r["read_error_rate"]) == (4, 1, 0.5, 0.25)
    assert metrics.describe(r) == "strict accuracy 0.0000, glitch rate 0.5000, read error rate 0.2500"


def test_softmax_decoding_by_hand():
    logits = torch.tensor([[[9.0, 9.0, 0.0, 2.0, 2.0, -5.0]]])  # PAD, BOS, END, a, b, c
    p = torch.exp(logits[0, 0, 2:]) / torch.exp(logits[0, 0, 2:]).sum()
    assert torch.allclose(metrics.output_probs(logits, "softmax")[0, 0], p)
    assert metrics.allowed_from_logits(logits, decode="softmax")[0, 0].tolist() == \
        [False, False] + (p > metrics.SOFTMAX_THRESHOLD).tolist()
    assert metrics.allowed_from_logits(logits)[0, 0].tolist() == [False, False, False, True, True, False]
    with pytest.raises(ValueError, match="decode"):
        metrics.output_probs(logits, "argmax")
    with pytest.raises(ValueError, match="decode"):
        metrics.MetricAccumulator(languages.get("parity"), Vocab("01"), "argmax")
