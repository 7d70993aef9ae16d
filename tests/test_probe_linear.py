"""probe.linear: planted variables, scikit-learn contract, reference solvers, control tasks."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

from _probe_toys import CountingModel, ToyConfig
from probe.controls import apply_control, control_labels, control_mapping, majority_baseline, random_init_like
from probe.linear import LinearProbe, LogisticProbe, RidgeProbe, with_hyperparameters
from probe.ridge import _ridge_path


def _planted_classes(n=3000, d=40, K=3, margin=4.0, seed=0):
    """Gaussian features (per-feature scales differ) + margin * direction of the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=n)
    dirs = rng.normal(size=(K, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    X = rng.normal(size=(n, d)) + margin * dirs[y]
    return X.astype(np.float32), y, dirs


def test_planted_binary_direction_is_recovered():
    rng = np.random.default_rng(1)
    n, d = 6000, 30
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    y = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, d)) + 2.0 * np.outer(2 * y - 1, u) + 3.0  # offset: intercept must absorb it
    tr, te = slice(0, 4000), slice(4000, None)
    probe = LinearProbe(kind="classification").fit(X[tr], y[tr])
    assert probe.score(X[te], y[te]) > 0.965  # Bayes accuracy Phi(2) = 0.977
    w = probe.coef_[0]
    assert probe.coef_.shape == (1, d) and np.ndim(probe.intercept_) == 1
    assert w @ u / np.linalg.norm(w) > 0.95  # the planted direction, raw feature space
    # coef_/intercept_ are the raw-space decision function
    np.testing.assert_allclose(X[te] @ probe.coef_.T + probe.intercept_, probe.decision_function(X[te])[:, None],
                               rtol=1e-4, atol=1e-3)


def test_planted_multiclass_is_recovered():
    X, y, dirs = _planted_classes()
    probe = LinearProbe().fit(X[:2000], y[:2000])
    assert probe.score(X[2000:], y[2000:]) > 0.97
    assert probe.coef_.shape == (3, X.shape[1])
    # each class row points (mostly) along its planted direction, relative to the other rows
    centred = probe.coef_ - probe.coef_.mean(axis=0)
    cos = (centred / np.linalg.norm(centred, axis=1, keepdims=True)) @ dirs.T
    assert (np.argmax(cos, axis=1) == np.arange(3)).all()
    np.testing.assert_allclose(probe.predict_proba(X[:5]).sum(1), 1.0)


def test_planted_regression_and_rounded_accuracy():
    rng = np.random.default_rng(2)
    n, d = 3000, 50
    u = rng.normal(size=d)
    depth = rng.integers(0, 11, size=n).astype(float)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + np.outer(depth, u)
    probe = LinearProbe(kind="regression").fit(X[:2000], depth[:2000])
    assert probe.score(X[2000:], depth[2000:]) > 0.99
    assert probe.accuracy(X[2000:], depth[2000:]) > 0.97
    # exact linear target: coef_ recovers it in raw space
    target = X @ u + 2.0
    exact = LinearProbe(kind="regression", alphas=(1e-6,)).fit(X[:2000], target[:2000])
    np.testing.assert_allclose(exact.coef_, u, rtol=1e-3, atol=1e-3)
    assert exact.intercept_ == pytest.approx(2.0, abs=1e-2)
    # NaN targets are masked
    y = depth.copy()
    y[::7] = np.nan
    masked = LinearProbe(kind="regression").fit(X[:2000], y[:2000])
    assert masked.score(X[2000:], y[2000:]) > 0.99


def test_sklearn_contract_clone_cv_pipeline():
    X, y, _ = _planted_classes(n=600, d=10)
    yr = X @ np.arange(10) + 1.0
    for est, target in [(LinearProbe(kind="classification", Cs=(0.1, 1.0)), y), (LogisticProbe(), y),
                        (LinearProbe(kind="regression"), yr), (RidgeProbe(), yr)]:
        c = clone(est)
        assert c.get_params() == est.get_params() and c is not est
        scores = cross_val_score(est, X, target, cv=3)
        assert scores.shape == (3,) and scores.min() > 0.9
        pipe = make_pipeline(PCA(n_components=8), clone(est)).fit(X, target)
        assert pipe.score(X, target) > 0.8
    assert is_classifier(LinearProbe(kind="classification")) and is_classifier(LogisticProbe())
    assert is_regressor(LinearProbe(kind="regression")) and is_regressor(RidgeProbe())
    p = LinearProbe().set_params(kind="regression", alphas=(1.0,))
    assert p.get_params()["kind"] == "regression" and is_regressor(p)
    with pytest.raises(ValueError, match="kind"):
        LinearProbe(kind="nope").fit(X, y)
    # the chosen hyperparameter is fixed by with_hyperparameters (no CV)
    fitted = LinearProbe(Cs=(0.01, 1.0)).fit(X, y)
    fixed = with_hyperparameters(fitted)
    assert fixed.get_params()["Cs"] == (fitted.C_,)


def test_lbfgs_solver_matches_sklearn_logistic_regression():
    """Reference: scikit-learn's LogisticRegression, same objective, same C, on standardised data."""
    X, y, _ = _planted_classes(n=800, d=12, margin=1.5, seed=3)
    X = X * np.linspace(0.5, 4, 12) + 2.0
    Xs = (X - X.mean(0)) / X.std(0)
    for C in (0.01, 1.0):
        ours = LogisticProbe(Cs=(C,), max_iter=1000, tol=1e-10).fit(X, y)
        ref = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(Xs, y)
        np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(Xs), atol=2e-4)
        np.testing.assert_allclose(ours.coef_standardized_, ref.coef_, atol=2e-3 * np.abs(ref.coef_).max())
        via_sklearn = LogisticProbe(Cs=(C,), solver="sklearn", max_iter=5000, tol=1e-10).fit(X, y)
        np.testing.assert_allclose(via_sklearn.predict_proba(X), ref.predict_proba(Xs), atol=2e-4)


def test_ridge_path_matches_sklearn_ridge():
    rng = np.random.default_rng(4)
    for n, d in [(200, 20), (30, 80)]:  # primal and dual branches
        X = (rng.normal(size=(n, d)) + 1.5).astype(np.float32)
        y = X @ rng.normal(size=d) + rng.normal(size=n) + 3.0
        for (w, b), a in zip(_ridge_path(X, y, [0.1, 10.0]), [0.1, 10.0]):
            ref = Ridge(alpha=a).fit(X.astype(np.float64), y)
            np.testing.assert_allclose(w, ref.coef_, rtol=1e-3, atol=1e-3)
            assert b == pytest.approx(ref.intercept_, rel=1e-3, abs=1e-3)


def test_control_labels_marginals_and_token_function():
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, 3000, size=60000)
    labels = rng.choice(4, p=[0.55, 0.25, 0.15, 0.05], size=60000)
    ctrl = control_labels(tokens, labels, seed=0)
    # a function of the token type
    for t in np.unique(tokens)[:200]:
        assert len(np.unique(ctrl[tokens == t])) == 1
    # same marginal, within sampling (3000 types)
    np.testing.assert_allclose(np.bincount(ctrl, minlength=4) / len(ctrl), [0.55, 0.25, 0.15, 0.05], atol=0.03)
    np.testing.assert_array_equal(ctrl, control_labels(tokens, labels, seed=0))
    assert (ctrl != control_labels(tokens, labels, seed=1)).any()
    # one mapping for train and test; unseen types get a reproducible draw
    mapping = control_mapping(tokens[:100], labels[:100], seed=0)
    test_tokens = np.array([tokens[0], 10**6, 10**6])
    out = apply_control(test_tokens, mapping, seed=0)
    assert out[0] == mapping[tokens[0]] and out[1] == out[2]
    # regression labels: floats from the marginal, NaNs excluded
    vals = np.where(rng.random(1000) < 0.1, np.nan, rng.normal(size=1000))
    cr = control_labels(rng.integers(0, 50, 1000), vals, seed=0)
    assert not np.isnan(cr).any() and set(cr) <= set(vals[~np.isnan(vals)])


def _selectivity(X, y, tokens, seed=0):
    n = len(y) * 2 // 3
    probe = LinearProbe().fit(X[:n], y[:n])
    task = probe.score(X[n:], y[n:])
    mapping = control_mapping(tokens[:n], y[:n], seed)
    c = apply_control(tokens, mapping, seed)
    control = with_hyperparameters(probe).fit(X[:n], c[:n]).score(X[n:], c[n:])
    return task, control, task - control


def test_selectivity_low_when_label_is_a_token_function_high_otherwise():
    rng = np.random.default_rng(6)
    n, n_types, d = 4500, 30, 48
    tokens = rng.integers(0, n_types, size=n)
    emb = rng.normal(size=(n_types, d)) * 3
    # (a) the label is a function of the token, the features encode the token
    X = emb[tokens] + 0.3 * rng.normal(size=(n, d))
    f = rng.integers(0, 3, size=n_types)
    task, control, sel = _selectivity(X, f[tokens], tokens)
    assert task > 0.98 and control > 0.95 and sel < 0.05
    # (b) a planted label independent of the token; the features carry the label, not the token
    y = rng.integers(0, 2, size=n)
    u = rng.normal(size=d)
    X = rng.normal(size=(n, d)) + 4 * np.outer(2 * y - 1, u / np.linalg.norm(u))
    task, control, sel = _selectivity(X, y, tokens)
    assert task > 0.98 and control < 0.75 and sel > 0.3


def test_majority_baseline():
    assert majority_baseline([0, 1, 1, 2], [1, 1, 0, 2], "classification") == 0.5
    assert majority_baseline(np.array([1.0, 3.0, np.nan]), np.array([1.0, 3.0]), "regression") == 0.0
    assert majority_baseline(np.array([0.0, 2.0]), np.array([2.0, 4.0]), "regression") < 0


def test_random_init_like():
    model = CountingModel(ToyConfig(seed=0))
    fresh = random_init_like(model, seed=3)
    assert type(fresh) is CountingModel and fresh.cfg.seed == 3 and model.cfg.seed == 0
    assert not np.allclose(fresh.weight.detach().numpy(), model.weight.detach().numpy())
    again = random_init_like(model, seed=3)
    np.testing.assert_array_equal(again.weight.detach().numpy(), fresh.weight.detach().numpy())
    assert not fresh.training
    with pytest.raises(TypeError, match="cfg"):
        random_init_like(object())
