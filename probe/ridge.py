"""Ridge-regression probe (counters, depth): ``score`` is R^2, :meth:`RidgeProbe.accuracy` that of the
rounded predictions (:mod:`probe.linear` describes the probes)."""
from __future__ import annotations

import numpy as np
import scipy.linalg
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils.validation import check_is_fitted

from .standardized import DEFAULT_ALPHAS, _as_2d_float, _finite_target, _limit_blas, _StandardizedLinear

__all__ = ["RidgeProbe"]


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

    def __init__(self, alphas=DEFAULT_ALPHAS, cv=3, standardize=True, cv_max_samples=4000, random_state=0):
        self._init_params(locals())

    @staticmethod
    def _fit_path(X, y, alphas):
        return _ridge_path(X, y, alphas)

    @staticmethod
    def _score_state(state, X, y):
        w, b = state
        return float(r2_score(y, X @ w.astype(np.float32) + b)) if len(y) > 1 else 0.0

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
    def intercept_(self):
        return self.b_ - float(self.coef_standardized_ @ (self.mean_ / self.scale_))

    @_limit_blas
    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "w_")
        return self._project(self._check_predict_data(X), self.w_) + self.b_

    def score(self, X, y, sample_weight=None):
        X, y, sample_weight = _finite_target(X, y, sample_weight)
        return float(r2_score(y, self.predict(X), sample_weight=sample_weight))

    def accuracy(self, X, y) -> float:
        """Fraction of rows where the rounded prediction equals ``y`` (integer targets such as depth)."""
        X, y = _finite_target(X, y)
        return float(np.mean(np.rint(self.predict(X)) == y))

