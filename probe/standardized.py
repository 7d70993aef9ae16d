"""What the linear probes share (:mod:`probe.linear` describes them): scikit-learn's input checks,
standardisation inside the probe, the choice of the regularisation by (group-aware) cross-validation
over a 1-D grid, raw-space coefficients, and BLAS on :data:`BLAS_THREADS` threads while a probe fits or
predicts.
"""
from __future__ import annotations

import contextlib
import functools
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold
from sklearn.utils import assert_all_finite
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, column_or_1d, validate_data
from threadpoolctl import threadpool_limits

__all__ = ["BLAS_THREADS", "DEFAULT_ALPHAS", "DEFAULT_CS", "GroupsWarning"]

#: The default grids, strongest penalty first (ties go to the stronger one).
DEFAULT_CS = (0.001, 0.01, 0.1, 1.0, 10.0)
DEFAULT_ALPHAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0)

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


def _finite_target(X, y, *more) -> tuple:
    """The rows of ``X``, ``y`` (as float64) and each of ``more`` (None stays None) whose target is not
    NaN (a masked ``None``)."""
    y = np.asarray(y, dtype=np.float64)
    keep = ~np.isnan(y)
    return (_as_2d_float(X)[keep], y[keep], *(None if m is None else np.asarray(m)[keep] for m in more))


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
    """Standardisation, CV over a 1-D grid and raw-space coefficients (shared by the probes).

    A subclass sets ``_classify`` (what ``fit`` checks the target as) and defines ``_fit(X, y, groups)``
    on checked data and ``coef_standardized_``.
    """

    _classify = False

    def _init_params(self, values: dict) -> None:
        """``__init__``'s body: store each constructor argument unchanged (scikit-learn's convention)."""
        for name in self._get_param_names():
            setattr(self, name, values[name])

    @_limit_blas
    def fit(self, X, y, groups=None):
        X, y, groups = self._check_fit_data(X, y, groups, classify=self._classify)
        return self._fit(X, y, groups)

    @property
    def coef_(self):
        return self.coef_standardized_ / self.scale_

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

    def _project(self, X, W: np.ndarray) -> np.ndarray:
        """``standardise(X) @ W`` for prediction, in float64 a chunk of rows at a time (W: ``[d]`` or
        ``[d, k]`` in the standardised space). Each row's value depends on that row alone: a float32
        product's rounding depends on where the row falls in the BLAS blocking, so the same string scored
        in another batch or order could move by an ulp (scikit-learn's ``check_methods_sample_order_invariance``
        catches it). Memory stays at one float64 chunk; fitting keeps its float32 products. ``X`` comes checked
        by :meth:`_check_predict_data` (2-D, float, the fitted feature count)."""
        W = np.asarray(W, dtype=np.float64)
        inv = 1.0 / self.scale_
        out = np.empty((X.shape[0],) + W.shape[1:])
        for i in range(0, X.shape[0], _CHUNK):
            out[i:i + _CHUNK] = ((X[i:i + _CHUNK].astype(np.float64) - self.mean_) * inv) @ W
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

