"""Linear probes as scikit-learn estimators, control tasks (Hewitt & Liang 2019) and baselines.

* :class:`LogisticProbe` -- multinomial logistic regression (categorical variables: top bracket, DFA
  state, stored bit). Objective, in scikit-learn's parameterisation (``C`` as in
  ``LogisticRegression``): ``C * sum_i CE(softmax(W x_i + b), y_i) + ||W||^2 / 2`` (intercept not
  penalised). ``solver="lbfgs"`` (default) minimises it with SciPy's L-BFGS-B on float32 matrix
  products -- scikit-learn's own lbfgs path casts float32 data to float64 at every gradient, which is
  ~3x slower at 50k x 2048; ``solver="sklearn"`` fits ``sklearn.linear_model.LogisticRegression`` and is
  the reference the tests compare against. Binary problems use the same symmetric softmax (two rows;
  ``coef_`` is reported as their difference, shape ``[1, d]``, as in scikit-learn).
* :class:`RidgeProbe` -- ridge regression (counters, depth); ``score`` is R^2 and :meth:`accuracy` the
  accuracy of rounded predictions (e.g. depth as an integer).
* :class:`LinearProbe` -- ``LinearProbe(kind="classification"|"regression", ...)`` dispatching to one
  of the two; its scikit-learn estimator type follows ``kind``.

Modules: :mod:`probe.logistic`, :mod:`probe.ridge`, what they share in :mod:`probe.standardized`
(checks, standardisation, CV, :data:`probe.standardized.BLAS_THREADS`); control tasks and baselines in
:mod:`probe.controls` (re-exported here).

All three standardise features inside (mean / std of the training data; constant features keep scale
1). ``coef_`` and ``intercept_`` are in the *raw* input space, so ``X @ coef_.T + intercept_`` is the
decision function (directions usable for steering/ablation); ``coef_standardized_`` is the
standardised-space weight. Rows whose target is NaN (a masked ``None``) are dropped in ``fit`` and
``score``.

Input checks are scikit-learn's (``validate_data``): NaN or infinite features, an all-NaN or infinite
target, a single class, sparse or complex input, 1-D ``X``, mismatched lengths or feature counts and
``predict`` before ``fit`` (``NotFittedError``) raise as in scikit-learn. ``predict``,
``decision_function`` and ``predict_proba`` compute in float64 a chunk of rows at a time, so a row's
prediction does not depend on the other rows of the batch or their order (fitting stays float32); and
``sklearn.utils.estimator_checks.check_estimator`` passes for all three probes with no exception
(``tests/test_probe_sklearn.py``). ``LinearProbe(kind="regression")`` has no ``decision_function`` or
``predict_proba``. ``n_iter_``: L-BFGS iterations of the final logistic fit; 1 for ridge (one direct
solve).

Regularisation is chosen by K-fold cross-validation (``cv`` folds, ``GroupKFold`` when ``groups`` --
e.g. sequence ids -- are given to ``fit``; without groups a :class:`GroupsWarning` says that positions
of one sequence may fall on both sides of the inner split) over the ``Cs`` / ``alphas`` grid, on a random subsample of
at most ``cv_max_samples`` rows (standardised with the full data's statistics), then the probe is
refit on all rows with the best value. A one-element grid skips CV. With ``max_iter`` and BLAS on one
thread (:data:`probe.standardized.BLAS_THREADS`), a 40k x 2048, 9-class logistic probe fits in ~5 s and
a 50k x 2048 ridge probe in ~6 s on a shared two-core machine. Caveat: when ``d`` is comparable to ``cv_max_samples`` the
CV subsample overfits more than the full data does, which biases the choice toward strong
regularisation; raise ``cv_max_samples`` (slower) when that matters.

Under ``cross_val_score(probe, X, y, groups=g, cv=GroupKFold())`` scikit-learn gives ``g`` to the
outer splitter only; to let the inner search use them too, route them to ``fit`` (scikit-learn's
metadata routing)::

    sklearn.set_config(enable_metadata_routing=True)
    cross_val_score(probe.set_fit_request(groups=True), X, y, cv=GroupKFold(), params={"groups": g})
"""
from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.metrics import accuracy_score
from sklearn.utils import ClassifierTags, RegressorTags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .controls import apply_control, control_labels, control_mapping, majority_baseline, random_init_like
from .logistic import LogisticProbe
from .ridge import RidgeProbe
from .standardized import DEFAULT_ALPHAS, DEFAULT_CS, GroupsWarning, _StandardizedLinear

__all__ = [
    "GroupsWarning",
    "LinearProbe",
    "LogisticProbe",
    "RidgeProbe",
    "apply_control",
    "control_labels",
    "control_mapping",
    "majority_baseline",
    "random_init_like",
    "with_hyperparameters",
]

_KINDS = {"classification": LogisticProbe, "regression": RidgeProbe}


class LinearProbe(_StandardizedLinear):
    """``LinearProbe(kind="classification")`` = :class:`LogisticProbe`; ``kind="regression"`` =
    :class:`RidgeProbe`. Parameters of the other kind are ignored. The fitted inner probe is ``probe_``.
    """

    def __init__(self, kind="classification", Cs=DEFAULT_CS, alphas=DEFAULT_ALPHAS, cv=3, standardize=True,
                 max_iter=100, tol=1e-4, cv_max_samples=4000, solver="lbfgs", random_state=0):
        self._init_params(locals())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        if self.kind == "classification":
            tags.estimator_type, tags.classifier_tags = "classifier", ClassifierTags()
        elif self.kind == "regression":
            tags.estimator_type, tags.regressor_tags = "regressor", RegressorTags()
        return tags

    def _make(self):
        """The unfitted inner probe of ``kind`` with this probe's parameters of that kind."""
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be 'classification' or 'regression', got {self.kind!r}")
        cls = _KINDS[self.kind]
        return cls(**{name: getattr(self, name) for name in cls._get_param_names()})

    def fit(self, X, y, groups=None):
        self.probe_ = self._make().fit(X, y, groups=groups)
        self.n_features_in_ = self.probe_.n_features_in_
        if self.kind == "classification":
            self.classes_ = self.probe_.classes_
        return self

    def __getattr__(self, name):
        # Fitted attributes (coef_, intercept_, C_, alpha_, mean_, ...) come from the inner probe.
        if name.endswith("_") and not name.startswith("__") and "probe_" in self.__dict__:
            return getattr(self.__dict__["probe_"], name)
        raise AttributeError(name)

    def _inner(self, method: str, X):
        """The fitted inner probe's ``method`` on checked ``X``."""
        check_is_fitted(self, "probe_")
        return getattr(self.probe_, method)(self._check_predict_data(X))

    def predict(self, X):
        return self._inner("predict", X)

    @available_if(lambda self: self.kind == "classification")
    def predict_proba(self, X):
        return self._inner("predict_proba", X)

    @available_if(lambda self: self.kind == "classification")
    def decision_function(self, X):
        return self._inner("decision_function", X)

    def score(self, X, y, sample_weight=None):
        """Accuracy (classification) or R^2 (regression)."""
        check_is_fitted(self, "probe_")
        return self.probe_.score(X, y, sample_weight=sample_weight)

    def accuracy(self, X, y) -> float:
        """Accuracy; for regression, of the rounded predictions."""
        check_is_fitted(self, "probe_")
        if self.kind == "regression":
            return self.probe_.accuracy(X, y)
        return float(accuracy_score(np.asarray(y), self.probe_.predict(X)))


def with_hyperparameters(probe) -> LinearProbe | LogisticProbe | RidgeProbe:
    """An unfitted clone of a fitted probe whose grid is fixed to the chosen value (no CV): the control
    task and baselines use the task probe's hyperparameters."""
    inner = getattr(probe, "probe_", probe)
    new = clone(probe)
    if isinstance(inner, LogisticProbe) and inner.C_ is not None:
        new.set_params(Cs=(inner.C_,))
    elif isinstance(inner, RidgeProbe):
        new.set_params(alphas=(inner.alpha_,))
    return new
