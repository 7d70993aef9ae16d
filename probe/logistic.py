"""Multinomial logistic-regression probe (:mod:`probe.linear` describes the objective and the solvers)."""
from __future__ import annotations

import numpy as np
import scipy.optimize
from sklearn.base import ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from .standardized import DEFAULT_CS, _limit_blas, _StandardizedLinear

__all__ = ["LogisticProbe"]


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

    _classify = True

    def __init__(self, Cs=DEFAULT_CS, cv=3, standardize=True, max_iter=100,
                 tol=1e-4, cv_max_samples=4000, solver="lbfgs", random_state=0):
        self._init_params(locals())

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
    def intercept_(self):
        check_is_fitted(self, "_W")
        b = self._b if self._W.shape[0] != 2 else np.array([self._b[1] - self._b[0]])
        return b - self.coef_standardized_ @ (self.mean_ / self.scale_)

    def _logits(self, X) -> np.ndarray:
        """[n, K] float64 logits of the symmetric softmax."""
        check_is_fitted(self, "_W")
        return self._project(self._check_predict_data(X), self._W.T) + self._b

    @_limit_blas
    def decision_function(self, X) -> np.ndarray:
        Z = self._logits(X)
        return Z[:, 1] - Z[:, 0] if Z.shape[1] == 2 else Z

    @_limit_blas
    def predict_proba(self, X) -> np.ndarray:
        Z = self._logits(X)
        Z -= Z.max(axis=1, keepdims=True)
        P = np.exp(Z)
        return P / P.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "_W")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

