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

All three standardise features inside (mean / std of the training data; constant features keep scale
1). ``coef_`` and ``intercept_`` are in the *raw* input space, so ``X @ coef_.T + intercept_`` is the
decision function (directions usable for steering/ablation); ``coef_standardized_`` is the
standardised-space weight. Rows whose target is NaN (a masked ``None``) are dropped in ``fit`` and
``score``.

Input checks are scikit-learn's (``validate_data``): NaN or infinite features, an all-NaN or infinite
target, a single class, sparse or complex input, 1-D ``X``, mismatched lengths or feature counts and
``predict`` before ``fit`` (``NotFittedError``) raise as in scikit-learn, and
``sklearn.utils.estimator_checks.check_estimator`` passes for all three probes with no exception
(``tests/test_probe_sklearn.py``). ``LinearProbe(kind="regression")`` has no ``decision_function`` or
``predict_proba``. ``n_iter_``: L-BFGS iterations of the final logistic fit; 1 for ridge (one direct
solve).

Regularisation is chosen by K-fold cross-validation (``cv`` folds, ``GroupKFold`` when ``groups`` --
e.g. sequence ids -- are given to ``fit``; without groups a :class:`GroupsWarning` says that positions
of one sequence may fall on both sides of the inner split) over the ``Cs`` / ``alphas`` grid, on a random subsample of
at most ``cv_max_samples`` rows (standardised with the full data's statistics), then the probe is
refit on all rows with the best value. A one-element grid skips CV. With ``max_iter`` and BLAS on one
thread (:data:`BLAS_THREADS`), a 40k x 2048, 9-class logistic probe fits in ~5 s and a 50k x 2048 ridge
probe in ~6 s on a shared two-core machine. Caveat: when ``d`` is comparable to ``cv_max_samples`` the
CV subsample overfits more than the full data does, which biases the choice toward strong
regularisation; raise ``cv_max_samples`` (slower) when that matters.

Under ``cross_val_score(probe, X, y, groups=g, cv=GroupKFold())`` scikit-learn gives ``g`` to the
outer splitter only; to let the inner search use them too, route them to ``fit`` (scikit-learn's
metadata routing)::

    sklearn.set_config(enable_metadata_routing=True)
    cross_val_score(probe.set_fit_request(groups=True), X, y, cv=GroupKFold(), params={"groups": g})
"""
from __future__ import annotations

import contextlib
import functools
import warnings
import zlib

import numpy as np
import scipy.linalg
import scipy.optimize
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold
from sklearn.utils import ClassifierTags, RegressorTags, assert_all_finite
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d, validate_data
from threadpoolctl import threadpool_limits

__all__ = [
    "GroupsWarning",
    "LinearProbe",
    "LogisticProbe",
    "RidgeProbe",
    "control_labels",
    "control_mapping",
    "apply_control",
    "majority_baseline",
    "random_init_like",
]

_CHUNK = 8192
#: BLAS/LAPACK threads used while a probe fits or predicts (None: the library default). One by default:
#: on a small shared machine a busy core makes multi-threaded products and Cholesky solves 3-30x
#: slower (measured: a 2048 x 2048 Cholesky solve 0.14 s on one thread, 4.3 s on two with the other
#: core busy), while two threads gain at most 2x when both cores are idle.
BLAS_THREADS: int | None = 1


def _blas_threads():
    if BLAS_THREADS is None:
        return contextlib.nullcontext()
    return threadpool_limits(limits=BLAS_THREADS, user_api="blas")


def _limit_blas(method):
    """Run a probe method under :data:`BLAS_THREADS`."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _blas_threads():
            return method(*args, **kwargs)

    return wrapper


def _as_2d_float(X) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D [n_samples, n_features], got shape {X.shape}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float32)
    return X


def _moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and std in float64, computed in chunks (no float64 copy of X)."""
    n = X.shape[0]
    s = np.zeros(X.shape[1])
    for i in range(0, n, _CHUNK):
        s += X[i:i + _CHUNK].sum(axis=0, dtype=np.float64)
    mean = s / max(n, 1)
    ss = np.zeros(X.shape[1])
    for i in range(0, n, _CHUNK):
        d = X[i:i + _CHUNK].astype(np.float64) - mean
        ss += (d * d).sum(axis=0)
    std = np.sqrt(ss / max(n, 1))
    return mean, std


class GroupsWarning(UserWarning):
    """A probe chose its regularisation by CV without sequence ids (see the module docstring)."""


_FLOATS = (np.float32, np.float64)


class _StandardizedLinear(BaseEstimator):
    """Standardisation, CV over a 1-D grid and raw-space coefficients (shared by both probes)."""

    def _check_fit_data(self, X, y, groups, classify: bool):
        """scikit-learn's checks on ``fit``'s input; rows with a NaN target are dropped (all-NaN raises)."""
        name = type(self).__name__
        X = validate_data(self, X, reset=True, dtype=_FLOATS)
        if y is None:
            raise ValueError(f"{name} requires y to be passed, but the target y is None")
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        if groups is not None:
            groups = np.asarray(groups)
            check_consistent_length(X, groups)
        if y.dtype.kind == "f":
            nan = np.isnan(y)
            if nan.all():
                raise ValueError(f"Input y contains NaN in every row: {name} has no target to fit")
            if nan.any():
                X, y = X[~nan], y[~nan]
                groups = None if groups is None else groups[~nan]
            assert_all_finite(y, input_name="y")
        if classify:
            check_classification_targets(y)
            classes = np.unique(y)
            if len(classes) < 2:
                raise ValueError(f"{name} needs samples of at least 2 classes in the data, but the data "
                                 f"contains only one class: {classes[0]!r}")
        else:
            y = y.astype(np.float64, copy=False)
        return X, y, groups

    def _check_predict_data(self, X):
        return validate_data(self, X, reset=False, dtype=_FLOATS)

    def _standardize_fit(self, X):
        if self.standardize:
            mean, std = _moments(X)
            scale = np.where(std > 1e-8 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        else:
            mean, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
        self.mean_, self.scale_ = mean, scale
        self.n_features_in_ = X.shape[1]

    def _transform(self, X) -> np.ndarray:
        X = _as_2d_float(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the probe was fit on {self.n_features_in_}")
        mean = self.mean_.astype(np.float32)
        inv = (1.0 / self.scale_).astype(np.float32)
        out = np.empty(X.shape, dtype=np.float32)
        for i in range(0, X.shape[0], _CHUNK):
            np.multiply(X[i:i + _CHUNK] - mean, inv, out=out[i:i + _CHUNK], casting="unsafe")
        return out

    def _splits(self, y, groups, is_clf, rng):
        cv = self.cv
        if not isinstance(cv, (int, np.integer)):
            return list(cv.split(np.zeros(len(y)), y, groups))
        if groups is not None and len(np.unique(groups)) >= cv:
            return list(GroupKFold(n_splits=int(cv)).split(np.zeros(len(y)), y, groups))
        seed = int(rng.integers(2**31 - 1))
        counts = np.unique(y, return_counts=True)[1] if is_clf else None
        if is_clf and counts.min() >= cv:
            return list(StratifiedKFold(int(cv), shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
        return list(KFold(int(cv), shuffle=True, random_state=seed).split(np.zeros(len(y))))

    def _select(self, Xs, y, groups, grid, fit_path, score_fn, is_clf):
        """Best grid value by CV on at most ``cv_max_samples`` rows. ``fit_path(X, y, grid)`` returns
        one fitted state per grid value (in order); ``score_fn(state, X, y)`` scores one."""
        grid = list(grid)
        if len(grid) == 1:
            return grid[0], None
        if groups is None and isinstance(self.cv, (int, np.integer)):
            warnings.warn(
                f"{type(self).__name__}: no groups given to fit, so the inner {int(self.cv)}-fold CV choosing the "
                "regularisation splits rows at random and positions of one sequence can fall in both folds; pass "
                "fit(X, y, groups=sequence_ids), or under cross_val_score route them: "
                "sklearn.set_config(enable_metadata_routing=True); probe.set_fit_request(groups=True); "
                "params={'groups': groups}", GroupsWarning, stacklevel=5)
        rng = np.random.default_rng(self.random_state)
        n = Xs.shape[0]
        rows = np.arange(n)
        if self.cv_max_samples is not None and n > self.cv_max_samples:
            rows = np.sort(rng.choice(n, size=int(self.cv_max_samples), replace=False))
        Xc, yc = Xs[rows], y[rows]
        gc = None if groups is None else np.asarray(groups)[rows]
        scores = np.zeros((len(grid),))
        splits = self._splits(yc, gc, is_clf, rng)
        for tr, te in splits:
            states = fit_path(Xc[tr], yc[tr], grid)
            scores += [score_fn(st, Xc[te], yc[te]) for st in states]
        scores /= max(1, len(splits))
        best = int(np.argmax(scores))  # first maximum: the grids are ordered strong -> weak penalty
        return grid[best], scores


# ----------------------------------------------------------------------------------------------
# logistic regression
# ----------------------------------------------------------------------------------------------


def _softmax_fit(X: np.ndarray, y: np.ndarray, K: int, C: float, max_iter: int, tol: float,
                 init: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Minimise (sum_i CE + ||W||^2 / (2C)) / n over W [K, d] and b [K]; returns flat params [K*(d+1)]
    and the iteration count. X is float32 (standardised); products stay float32, sums float64."""
    n, d = X.shape
    Y = np.zeros((n, K), dtype=np.float64)
    Y[np.arange(n), y] = 1.0
    lam = 1.0 / (C * n)

    def fun(theta):
        W = theta[:K * d].reshape(K, d)
        b = theta[K * d:]
        Z = (X @ W.T.astype(np.float32)).astype(np.float64) + b
        Z -= Z.max(axis=1, keepdims=True)
        expZ = np.exp(Z)
        S = expZ.sum(axis=1, keepdims=True)
        loss = (np.log(S[:, 0]) - (Z * Y).sum(axis=1)).sum() / n + 0.5 * lam * np.dot(theta[:K * d],
                                                                                          theta[:K * d])
        G = (expZ / S - Y) / n
        gW = (X.T @ G.astype(np.float32)).T.astype(np.float64) + lam * W
        return loss, np.concatenate([gW.ravel(), G.sum(axis=0)])

    theta0 = np.zeros(K * (d + 1)) if init is None else init
    res = scipy.optimize.minimize(
        fun, theta0, jac=True, method="L-BFGS-B",
        options={"maxiter": int(max_iter), "gtol": tol, "ftol": 64 * np.finfo(float).eps})
    return res.x, int(res.nit)


class LogisticProbe(ClassifierMixin, _StandardizedLinear):
    """Multinomial logistic-regression probe with standardisation and CV-chosen ``C``.

    Cs are tried from strongest to weakest regularisation; ties go to the stronger one.
    """

    def __init__(self, Cs=(0.001, 0.01, 0.1, 1.0, 10.0), cv=3, standardize=True, max_iter=100,
                 tol=1e-4, cv_max_samples=4000, solver="lbfgs", random_state=0):
        self.Cs = Cs
        self.cv = cv
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol
        self.cv_max_samples = cv_max_samples
        self.solver = solver
        self.random_state = random_state

    def _fit_path(self, X, y, Cs, K):
        """Fitted (W, b) for each C; warm-started along the path with the lbfgs solver."""
        out, init = [], None
        for C in Cs:
            if self.solver == "sklearn":
                lr = LogisticRegression(C=C, max_iter=self.max_iter, tol=self.tol).fit(X, y)
                W = np.zeros((K, X.shape[1]))
                b = np.zeros(K)
                if len(lr.classes_) == 2:  # scikit-learn's binary form -> two symmetric rows
                    W[lr.classes_[1]], b[lr.classes_[1]] = lr.coef_[0] / 2, lr.intercept_[0] / 2
                    W[lr.classes_[0]], b[lr.classes_[0]] = -lr.coef_[0] / 2, -lr.intercept_[0] / 2
                elif len(lr.classes_) > 2:
                    W[lr.classes_], b[lr.classes_] = lr.coef_, lr.intercept_
                present = np.zeros(K, bool)
                present[lr.classes_] = True
                b[~present] = -np.inf if len(lr.classes_) > 1 else 0.0
                if len(lr.classes_) == 1:
                    b[lr.classes_[0]] = 1.0
                out.append((W, b, int(np.max(lr.n_iter_))))
                continue
            theta, nit = _softmax_fit(X, y, K, C, self.max_iter, self.tol, init)
            init = theta
            out.append((theta[:K * X.shape[1]].reshape(K, -1), theta[K * X.shape[1]:], nit))
        return out

    @staticmethod
    def _score_state(state, X, y):
        W, b = state[:2]
        return float(np.mean(np.argmax(X @ W.T.astype(np.float32) + b, axis=1) == y))

    @_limit_blas
    def fit(self, X, y, groups=None):
        X, y, groups = self._check_fit_data(X, y, groups, classify=True)
        return self._fit(X, y, groups)

    def _fit(self, X, y, groups):
        self.classes_, y_codes = np.unique(y, return_inverse=True)
        K = len(self.classes_)
        self._standardize_fit(X)
        Xs = self._transform(X)
        Cs = sorted(self.Cs)
        self.C_, self.cv_scores_ = self._select(
            Xs, y_codes, groups, Cs, lambda a, b_, g: self._fit_path(a, b_, g, K),
            self._score_state, is_clf=True)
        (self._W, self._b, nit), = self._fit_path(Xs, y_codes, [self.C_], K)
        self.n_iter_ = max(1, nit)
        del Xs
        return self

    # -- fitted quantities -------------------------------------------------------------------------
    @property
    def coef_standardized_(self):
        check_is_fitted(self, "_W")
        W = self._W
        return (W[1] - W[0])[None] if W.shape[0] == 2 else W

    @property
    def coef_(self):
        return self.coef_standardized_ / self.scale_

    @property
    def intercept_(self):
        check_is_fitted(self, "_W")
        b = self._b if self._W.shape[0] != 2 else np.array([self._b[1] - self._b[0]])
        return b - self.coef_standardized_ @ (self.mean_ / self.scale_)

    @_limit_blas
    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "_W")
        Xs = self._transform(self._check_predict_data(X))
        Z = (Xs @ self._W.T.astype(np.float32)).astype(np.float64) + self._b
        return Z[:, 1] - Z[:, 0] if Z.shape[1] == 2 else Z

    @_limit_blas
    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "_W")
        Xs = self._transform(self._check_predict_data(X))
        Z = (Xs @ self._W.T.astype(np.float32)).astype(np.float64) + self._b
        Z -= Z.max(axis=1, keepdims=True)
        P = np.exp(Z)
        return P / P.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "_W")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


# ----------------------------------------------------------------------------------------------
# ridge regression
# ----------------------------------------------------------------------------------------------


def _spd_solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve A x = b for a (numerically) positive-definite A: Cholesky, or LU when rounding in the
    float32 Gram made it indefinite."""
    try:
        return scipy.linalg.solve(A, b, assume_a="pos", check_finite=False)
    except np.linalg.LinAlgError:
        return np.linalg.solve(A, b)


def _ridge_path(X: np.ndarray, y: np.ndarray, alphas) -> list[tuple[np.ndarray, float]]:
    """Ridge solutions (w, b) of min ||y - Xw - b||^2 + alpha ||w||^2 (intercept unpenalised) for every
    alpha, from one centred Gram matrix (primal [d, d] when n >= d, dual [n, n] otherwise) and one
    float64 linear solve per alpha. X is centred (in float32) before the Gram is formed: centring the
    Gram instead (X'X - n m m') cancels catastrophically in float32 for near-constant features."""
    X = _as_2d_float(X).astype(np.float32, copy=False)
    y = np.asarray(y, dtype=np.float64)
    n, d = X.shape
    mx = X.mean(axis=0, dtype=np.float64)
    my = float(y.mean())
    yc = y - my
    Xc = X - mx.astype(np.float32)
    out = []
    if n >= d:
        A0 = (Xc.T @ Xc).astype(np.float64)
        rhs = (Xc.T @ yc.astype(np.float32)).astype(np.float64)
        for a in alphas:
            A = A0.copy()
            A[np.diag_indices(d)] += a
            w = _spd_solve(A, rhs)
            out.append((w, my - float(mx @ w)))
    else:
        K0 = (Xc @ Xc.T).astype(np.float64)
        for a in alphas:
            K = K0.copy()
            K[np.diag_indices(n)] += a
            dual = _spd_solve(K, yc)
            w = (Xc.T @ dual.astype(np.float32)).astype(np.float64)
            out.append((w, my - float(mx @ w)))
    return out


def _ridge_solve(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """One ridge solution (see :func:`_ridge_path`)."""
    return _ridge_path(X, y, [alpha])[0]


class RidgeProbe(RegressorMixin, _StandardizedLinear):
    """Ridge-regression probe with standardisation and CV-chosen ``alpha`` (``score`` = R^2).

    Alphas are tried from strongest to weakest regularisation; ties go to the stronger one.
    """

    def __init__(self, alphas=(1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0), cv=3, standardize=True,
                 cv_max_samples=4000, random_state=0):
        self.alphas = alphas
        self.cv = cv
        self.standardize = standardize
        self.cv_max_samples = cv_max_samples
        self.random_state = random_state

    @staticmethod
    def _fit_path(X, y, alphas):
        return _ridge_path(X, y, alphas)

    @staticmethod
    def _score_state(state, X, y):
        w, b = state
        return float(r2_score(y, X @ w.astype(np.float32) + b)) if len(y) > 1 else 0.0

    @_limit_blas
    def fit(self, X, y, groups=None):
        X, y, groups = self._check_fit_data(X, y, groups, classify=False)
        return self._fit(X, y, groups)

    def _fit(self, X, y, groups):
        self.n_iter_ = 1  # one direct linear solve
        self._standardize_fit(X)
        Xs = self._transform(X)
        alphas = sorted(self.alphas, reverse=True)
        self.alpha_, self.cv_scores_ = self._select(Xs, y, groups, alphas, self._fit_path,
                                                    self._score_state, is_clf=False)
        self.w_, self.b_ = _ridge_solve(Xs, y, self.alpha_)
        del Xs
        return self

    @property
    def coef_standardized_(self):
        check_is_fitted(self, "w_")
        return self.w_

    @property
    def coef_(self):
        return self.coef_standardized_ / self.scale_

    @property
    def intercept_(self):
        return self.b_ - float(self.coef_standardized_ @ (self.mean_ / self.scale_))

    @_limit_blas
    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "w_")
        Xs = self._transform(self._check_predict_data(X))
        return (Xs @ self.w_.astype(np.float32)).astype(np.float64) + self.b_

    def score(self, X, y, sample_weight=None):
        y = np.asarray(y, dtype=np.float64)
        keep = ~np.isnan(y)
        X = _as_2d_float(X)
        return float(r2_score(y[keep], self.predict(X[keep]),
                              sample_weight=None if sample_weight is None else np.asarray(sample_weight)[keep]))

    def accuracy(self, X, y) -> float:
        """Fraction of rows where the rounded prediction equals ``y`` (integer targets such as depth)."""
        y = np.asarray(y, dtype=np.float64)
        keep = ~np.isnan(y)
        X = _as_2d_float(X)
        return float(np.mean(np.rint(self.predict(X[keep])) == y[keep]))


# ----------------------------------------------------------------------------------------------
# the dispatching probe
# ----------------------------------------------------------------------------------------------


class LinearProbe(_StandardizedLinear):
    """``LinearProbe(kind="classification")`` = :class:`LogisticProbe`; ``kind="regression"`` =
    :class:`RidgeProbe`. Parameters of the other kind are ignored. The fitted inner probe is ``probe_``.
    """

    def __init__(self, kind="classification", Cs=(0.001, 0.01, 0.1, 1.0, 10.0),
                 alphas=(1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0), cv=3, standardize=True,
                 max_iter=100, tol=1e-4, cv_max_samples=4000, solver="lbfgs", random_state=0):
        self.kind = kind
        self.Cs = Cs
        self.alphas = alphas
        self.cv = cv
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol
        self.cv_max_samples = cv_max_samples
        self.solver = solver
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        if self.kind == "classification":
            tags.estimator_type, tags.classifier_tags = "classifier", ClassifierTags()
        elif self.kind == "regression":
            tags.estimator_type, tags.regressor_tags = "regressor", RegressorTags()
        return tags

    def _make(self):
        if self.kind == "classification":
            return LogisticProbe(Cs=self.Cs, cv=self.cv, standardize=self.standardize,
                                 max_iter=self.max_iter, tol=self.tol,
                                 cv_max_samples=self.cv_max_samples, solver=self.solver,
                                 random_state=self.random_state)
        if self.kind == "regression":
            return RidgeProbe(alphas=self.alphas, cv=self.cv, standardize=self.standardize,
                              cv_max_samples=self.cv_max_samples,
                              random_state=self.random_state)
        raise ValueError(f"kind must be 'classification' or 'regression', got {self.kind!r}")

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

    def predict(self, X):
        check_is_fitted(self, "probe_")
        return self.probe_.predict(self._check_predict_data(X))

    @available_if(lambda self: self.kind == "classification")
    def predict_proba(self, X):
        check_is_fitted(self, "probe_")
        return self.probe_.predict_proba(self._check_predict_data(X))

    @available_if(lambda self: self.kind == "classification")
    def decision_function(self, X):
        check_is_fitted(self, "probe_")
        return self.probe_.decision_function(self._check_predict_data(X))

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


# ----------------------------------------------------------------------------------------------
# control tasks (Hewitt & Liang 2019)
# ----------------------------------------------------------------------------------------------


def control_mapping(tokens, labels, seed: int = 0) -> dict:
    """token type -> control label, each drawn independently from the empirical label marginal.

    Types are visited in sorted order, so the mapping depends only on (types, labels, seed). NaN labels
    (masked values) are left out of the marginal.
    """
    tokens = np.asarray(tokens)
    labels = np.asarray(labels)
    pool = labels[~np.isnan(labels)] if labels.dtype.kind == "f" else labels
    if pool.size == 0:
        raise ValueError("no labels to draw a control task from")
    rng = np.random.default_rng(seed)
    types = np.unique(tokens)
    draws = pool[rng.integers(0, pool.size, size=types.size)]
    return {t.item(): d.item() for t, d in zip(types, draws)}


def apply_control(tokens, mapping: dict, seed: int = 0, marginal=None) -> np.ndarray:
    """Control labels of ``tokens`` under ``mapping``; token types absent from it get a draw from
    ``marginal`` (default: the mapping's values) made reproducibly per type."""
    tokens = np.asarray(tokens)
    values = np.asarray(list(mapping.values()))
    pool = values if marginal is None else np.asarray(marginal)
    out = np.empty(tokens.shape, dtype=values.dtype)
    for t in np.unique(tokens):
        key = t.item()
        if key in mapping:
            v = mapping[key]
        else:
            stable = key if isinstance(key, int) else zlib.crc32(repr(key).encode())
            v = pool[np.random.default_rng([seed, abs(stable) % (2**31)]).integers(pool.size)]
        out[tokens == t] = v
    return out


def control_labels(tokens, labels, seed: int = 0) -> np.ndarray:
    """Control task: each token type gets one label drawn from the empirical marginal of ``labels``;
    every position takes its token's label. Same label marginal (in expectation over types), but a
    function of token identity only. Use one mapping for train and test (:func:`control_mapping` on
    the training rows, :func:`apply_control` on both)."""
    return apply_control(tokens, control_mapping(tokens, labels, seed), seed)


# ----------------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------------


def majority_baseline(y_train, y_test, kind: str) -> float:
    """Accuracy of always predicting the training majority class, or R^2 of predicting the training
    mean (``kind="regression"``; about 0, negative when the test mean differs)."""
    y_train = np.asarray(y_train)
    y_test = np.asarray(y_test)
    if kind == "classification":
        vals, counts = np.unique(y_train, return_counts=True)
        return float(np.mean(y_test == vals[np.argmax(counts)]))
    y_train = y_train[~np.isnan(y_train)]
    y_test = y_test[~np.isnan(y_test)]
    return float(r2_score(y_test, np.full(y_test.shape, y_train.mean())))


def random_init_like(model, seed: int = 1):
    """A fresh, randomly initialised model of ``model``'s class built from its ``cfg`` (with ``cfg.seed``
    replaced when the config has one), on the same device and in eval mode.

    Raises ``TypeError`` when the model has no ``cfg`` or its class cannot be rebuilt from it.
    """
    import copy
    import dataclasses

    import torch

    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise TypeError(f"{type(model).__name__} has no .cfg; build the random-init model yourself")
    if dataclasses.is_dataclass(cfg) and any(f.name == "seed" for f in dataclasses.fields(cfg)):
        cfg = dataclasses.replace(cfg, seed=seed)
    elif hasattr(cfg, "seed"):
        cfg = copy.copy(cfg)
        try:
            cfg.seed = seed
        except AttributeError:
            pass
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        try:
            fresh = type(model)(cfg)
        except TypeError as exc:
            raise TypeError(f"cannot rebuild {type(model).__name__} from its cfg: {exc}") from exc
    finally:
        torch.random.set_rng_state(state)
    device = None
    for p in model.parameters():
        device = p.device
        break
    if device is not None:
        fresh = fresh.to(device)
    return fresh.eval()


def fit_probe(kind: str, X, y, groups=None, **params):
    """Convenience: ``LinearProbe(kind, **params).fit(X, y, groups)``."""
    return LinearProbe(kind=kind, **params).fit(X, y, groups=groups)


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
