"""probe.alignment: linear CKA and linear-map R² against hand computations."""
from __future__ import annotations

import numpy as np
import pytest

from probe.alignment import alignment_scores, linear_cka, linear_map_r2


def _cka_by_gram(x, y):
    """CKA from centred Gram matrices (the sample-space definition, O(n^2))."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))


def test_cka_matches_the_gram_matrix_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = x @ rng.normal(size=(5, 7)) + 0.5 * rng.normal(size=(60, 7))
    assert linear_cka(x, y) == pytest.approx(_cka_by_gram(x, y), rel=1e-10)


def test_cka_is_invariant_to_rotation_and_scale_and_low_for_independent():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, rng.normal(size=(500, 6))) < 0.1
    with pytest.raises(ValueError, match="same rows"):
        linear_cka(x, x[:10])


def test_linear_map_r2_recovers_a_linear_relation_one_way_only():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 8))
    y = x[:, :2] @ np.array([[1.0, -2.0], [0.5, 3.0]])  # y is a function of 2 of x's 8 dims
    idx = np.arange(2000)
    assert linear_map_r2(x, y, idx[:1500], idx[1500:]) > 0.999
    assert linear_map_r2(y, x, idx[:1500], idx[1500:]) < 0.4  # x's other 6 dims are not in y
    seq = np.repeat(np.arange(100), 20)
    s = alignment_scores(x, y, seq, seed=0)
    assert s["r2_xy"] > 0.999 and s["r2_yx"] < 0.4 and 0 < s["cka"] < 1
