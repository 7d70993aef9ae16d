"""The probes under scikit-learn's own estimator checks, its input errors (bad input must fail
loudly, not silently) and group-aware inner CV under cross_val_score."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.utils.estimator_checks import check_estimator

from probe.linear import GroupsWarning, LinearProbe, LogisticProbe, RidgeProbe

ESTIMATORS = [RidgeProbe(), LogisticProbe(), LinearProbe(), LinearProbe(kind="regression")]


@pytest.mark.parametrize("est", ESTIMATORS, ids=["ridge", "logistic", "linear-clf", "linear-reg"])
def test_check_estimator_passes_with_no_exception(est):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(est, on_fail=None)
    failed = [(r["check_name"], str(r["exception"]).splitlines()[:1]) for r in results if r["status"] == "failed"]
    assert len(results) > 40 and failed == []


def _data(n=60, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, (X[:, 0] > 0).astype(int), X @ rng.normal(size=d)


@pytest.mark.parametrize("make", [RidgeProbe, LogisticProbe])
def test_a_rows_prediction_does_not_depend_on_the_other_rows(make):
    # Float32 hidden states of a realistic width: a float32 product rounds a row by where it falls in the
    # BLAS blocking (an ulp, ~1e-7 relative); the probes predict in float64 chunks, so a row scored alone,
    # in another order or in a batch larger than one chunk agrees with itself to float64 rounding.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 257)).astype(np.float32)
    y = (X[:, :3].sum(1) > 0).astype(int) if make is LogisticProbe else X[:, :3].sum(1)
    probe = make(Cs=(1.0,)) if make is LogisticProbe else make(alphas=(1.0,))
    probe.fit(X, y)
    score = probe.decision_function if make is LogisticProbe else probe.predict
    full = score(X)
    perm = rng.permutation(len(X))
    np.testing.assert_allclose(score(X[perm]), full[perm], rtol=1e-12, atol=1e-12)
    alone = np.array([score(X[i:i + 1])[0] for i in range(0, len(X), 7)])
    np.testing.assert_allclose(alone, full[::7], rtol=1e-12, atol=1e-12)
    big = np.concatenate([X] * 30)  # 9,000 rows: more than one chunk
    np.testing.assert_allclose(score(big)[-len(X):], full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", [LogisticProbe, lambda: LinearProbe(kind="classification")])
def test_a_single_class_is_refused_not_scored_1(make):
    X, _, _ = _data()
    with pytest.raises(ValueError, match="only one class"):
        make().fit(X, np.zeros(len(X), dtype=int))


@pytest.mark.parametrize("make", [LogisticProbe, RidgeProbe])
def test_nan_features_are_refused(make):
    X, yc, yr = _data()
    X[7, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        make().fit(X, yc if make is LogisticProbe else yr)
    X, yc, yr = _data()
    probe = make().fit(X, yc if make is LogisticProbe else yr, groups=np.arange(len(X)) // 6)
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        probe.predict(X)


@pytest.mark.parametrize("make", [LogisticProbe, RidgeProbe])
def test_targets_all_nan_are_refused_and_partial_nan_rows_dropped(make):
    X, yc, yr = _data()
    y = (yc if make is LogisticProbe else yr).astype(float)
    with pytest.raises(ValueError, match="NaN in every row"):
        make().fit(X, np.full(len(X), np.nan))
    g = np.arange(len(X)) // 6
    y_masked = y.copy()
    y_masked[::5] = np.nan
    keep = ~np.isnan(y_masked)
    a = make(random_state=0).fit(X, y_masked, groups=g)
    b = make(random_state=0).fit(X[keep], y[keep], groups=g[keep])
    np.testing.assert_allclose(a.coef_, b.coef_)


def test_predict_before_fit_and_regression_has_no_decision_function():
    X, _, _ = _data()
    for probe in (LogisticProbe(), RidgeProbe(), LinearProbe(), LinearProbe(kind="regression")):
        with pytest.raises(NotFittedError):
            probe.predict(X)
    reg = LinearProbe(kind="regression")
    assert not hasattr(reg, "decision_function") and not hasattr(reg, "predict_proba")
    assert hasattr(LinearProbe(), "decision_function")


def _sequences(n_seq=24, per=8, d=6, seed=0):
    """Positions of one sequence share a sequence-specific offset and the sequence's label: a probe can
    memorise sequences, which only a split by sequence exposes."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_seq), per)
    y = np.repeat(rng.integers(0, 2, n_seq), per)
    X = np.repeat(rng.normal(size=(n_seq, d)), per, axis=0) + 0.05 * rng.normal(size=(n_seq * per, d))
    return X, y, groups


def test_cross_val_score_with_groups_warns_without_routing_and_uses_them_with_it(monkeypatch):
    X, y, groups = _sequences()
    seen = []
    original = LogisticProbe._splits

    def spy(self, y_, groups_, is_clf, rng):
        splits = original(self, y_, groups_, is_clf, rng)
        seen.append((groups_, splits))
        return splits

    monkeypatch.setattr(LogisticProbe, "_splits", spy)
    with pytest.warns(GroupsWarning, match="groups"):
        cross_val_score(LogisticProbe(), X, y, groups=groups, cv=GroupKFold(n_splits=3))
    assert seen and all(g is None for g, _ in seen)
    seen.clear()
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("error", GroupsWarning)
        for probe in (LogisticProbe(), LinearProbe()):
            cross_val_score(probe.set_fit_request(groups=True), X, y, cv=GroupKFold(n_splits=3),
                            params={"groups": groups})
    assert len(seen) == 6
    for g, splits in seen:  # every inner split keeps each sequence on one side
        assert g is not None
        for tr, te in splits:
            assert not set(g[tr]) & set(g[te])


def test_conditional_probe_lists_groups_with_a_single_class():
    """ConditionalProbe no longer relies on a one-class probe: such a group predicts its class and is
    listed in single_class_."""
    from probe.conditional import ConditionalProbe

    X, y, _ = _data(n=80)
    given = np.repeat([0, 1], 40)
    y = np.where(given == 1, 5, y)  # every row at given=1 has class 5
    cp = ConditionalProbe().fit(X, y, given, groups=np.arange(80) // 4)
    assert cp.single_class_ == {1: 5} and set(cp.probes_) == {0}
    assert (cp.predict(X[given == 1], given[given == 1]) == 5).all()
    assert cp.covered(given).all()
