"""ConditionalProbe: one probe per value of the conditioning variable, checked against probes fitted
by hand on each group, and on a product structure that one linear probe cannot read."""
from __future__ import annotations

import numpy as np
import pytest

from probe import ConditionalProbe, LinearProbe


def _product_data(n=1200, depth_values=4, n_classes=3, seed=0):
    """y = argmax of the block of the row's depth: block[d] holds a one-hot of y, other blocks noise.
    Linear given the depth, not linear overall (each block means something only at its depth)."""
    rng = np.random.default_rng(seed)
    depth = rng.integers(0, depth_values, n)
    y = rng.integers(0, n_classes, n)
    X = rng.normal(0, 1.0, (n, depth_values * n_classes))
    for i in range(n):
        X[i, depth[i] * n_classes + y[i]] += 4.0
    return X, y, depth


def test_matches_probes_fitted_by_hand_per_group():
    X, y, g = _product_data()
    cp = ConditionalProbe(kind="classification", probe_params={"Cs": (1.0,)}).fit(X[:900], y[:900], g[:900])
    pred = cp.predict(X[900:], g[900:])
    for v in np.unique(g):
        rows_tr, rows_te = np.flatnonzero(g[:900] == v), 900 + np.flatnonzero(g[900:] == v)
        ref = LinearProbe(kind="classification", Cs=(1.0,)).fit(X[rows_tr], y[rows_tr])
        np.testing.assert_array_equal(pred[rows_te - 900], ref.predict(X[rows_te]))
    assert cp.counts_ == {int(v): int(np.sum(g[:900] == v)) for v in np.unique(g)}


def test_reads_a_product_that_one_linear_probe_cannot():
    X, y, g = _product_data(n_classes=3, depth_values=6)
    cond = ConditionalProbe(kind="classification").fit(X[:900], y[:900], g[:900]).score(X[900:], y[900:], g[900:])
    plain = LinearProbe(kind="classification").fit(X[:900], y[:900]).score(X[900:], y[900:])
    assert cond > 0.95 and plain < cond - 0.2


def test_unseen_given_values_are_errors_for_classification_and_left_out_for_regression():
    X, y, g = _product_data()
    train = g != 3
    cp = ConditionalProbe(kind="classification").fit(X[train], y[train], g[train])
    pred = cp.predict(X, g)
    assert np.all(pred[g == 3] == -1) and not cp.covered(g)[g == 3].any()
    acc_seen = cp.score(X[~train], y[~train], g[~train])
    assert acc_seen == 0.0  # every row of the unseen group counts as an error
    yr = y.astype(float) + 0.1 * X[:, 0]
    reg = ConditionalProbe(kind="regression").fit(X[train], yr[train], g[train])
    assert np.isnan(reg.predict(X, g)[g == 3]).all()
    both = reg.score(X, yr, g)
    seen_only = reg.score(X[train], yr[train], g[train])
    assert both == pytest.approx(seen_only)  # rows without a probe are left out of R^2


def test_bad_input_is_a_clear_error():
    X, y, g = _product_data(n=50)
    with pytest.raises(ValueError, match="different lengths"):
        ConditionalProbe().fit(X, y[:-1], g)
    with pytest.raises(ValueError, match="kind"):
        ConditionalProbe(kind="ordinal").fit(X, y, g)
