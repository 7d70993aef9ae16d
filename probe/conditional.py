"""One linear probe per value of a conditioning variable: "``y`` is linearly readable once ``g`` is known".

The Dyck(K, h) construction keeps one memory block per depth and reads the block of the current
depth: the top bracket is ``block[depth]``, a product of the state with the depth, which no single
linear map reads (a plain probe gets about 1/K). Given the depth it is linear again, so
``ConditionalProbe(kind="classification").fit(X, top, given=depth)`` fits one :class:`LinearProbe`
per depth value and ``predict(X, given=depth)`` routes each row to its depth's probe.

Shapes: ``X [n, d]``; ``y`` and ``given`` ``[n]``. Rows whose ``given`` value had no training rows
get no prediction: ``-1`` (classification, never a class index) or NaN (regression), and count as
errors in :meth:`ConditionalProbe.score` for classification (left out for regression).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
from sklearn.base import BaseEstimator

from probe.linear import LinearProbe

__all__ = ["ConditionalProbe"]


class ConditionalProbe(BaseEstimator):
    """scikit-learn style: ``fit(X, y, given, groups=None)``, ``predict(X, given)``, ``score``.

    ``probes_`` maps each ``given`` value seen in training to its fitted :class:`LinearProbe`;
    ``counts_`` to its number of training rows. Extra keyword arguments go to every probe.
    """

    def __init__(self, kind: str = "classification", random_state: int = 0, probe_params: Optional[dict] = None):
        self.kind = kind
        self.random_state = random_state
        self.probe_params = probe_params

    def fit(self, X, y, given, groups=None) -> "ConditionalProbe":
        if self.kind not in ("classification", "regression"):
            raise ValueError(f"kind must be 'classification' or 'regression', got {self.kind!r}")
        X, y, given = np.asarray(X), np.asarray(y), np.asarray(given)
        if not len(X) == len(y) == len(given):
            raise ValueError(f"X, y and given have different lengths: {len(X)}, {len(y)}, {len(given)}")
        self.probes_: dict[Any, LinearProbe] = {}
        self.counts_: dict[Any, int] = {}
        self.single_class_: dict[Any, Any] = {}
        for v in _values(given):
            rows = np.flatnonzero(given == v)
            yv = y[rows]
            seen = np.unique(yv[~np.isnan(yv)] if yv.dtype.kind == "f" else yv)
            if self.kind == "classification" and len(seen) == 1:
                # One value of y at this ``given``: no probe can be fit (scikit-learn refuses one class);
                # it is predicted as that value and listed in ``single_class_``.
                self.single_class_[_key(v)] = seen[0]
                self.counts_[_key(v)] = len(rows)
                continue
            probe = LinearProbe(kind=self.kind, random_state=self.random_state, **(self.probe_params or {}))
            self.probes_[_key(v)] = probe.fit(X[rows], y[rows], groups=None if groups is None else np.asarray(groups)[rows])
            self.counts_[_key(v)] = len(rows)
        return self

    def predict(self, X, given) -> np.ndarray:
        X, given = np.asarray(X), np.asarray(given)
        out = np.full(len(X), -1 if self.kind == "classification" else np.nan,
                      dtype=np.int64 if self.kind == "classification" else np.float64)
        for v in _values(given):
            probe = self.probes_.get(_key(v))
            rows = np.flatnonzero(given == v)
            if probe is not None:
                out[rows] = probe.predict(X[rows])
            elif _key(v) in self.single_class_:
                out[rows] = self.single_class_[_key(v)]
        return out

    def covered(self, given) -> np.ndarray:
        """Boolean mask of the rows whose ``given`` value has a probe (or a single seen class)."""
        given = np.asarray(given)
        return np.array([_key(v) in self.probes_ or _key(v) in self.single_class_ for v in given], dtype=bool)

    def score(self, X, y, given) -> float:
        """Accuracy (classification; unseen ``given`` values count as errors) or pooled R^2
        (regression, over rows with a probe and a non-NaN target)."""
        y = np.asarray(y)
        pred = self.predict(X, given)
        if self.kind == "classification":
            return float(np.mean((pred == y) & self.covered(given))) if len(y) else float("nan")
        keep = ~np.isnan(pred) & ~np.isnan(y.astype(float))
        yk = y[keep].astype(float)
        tot = float(np.sum((yk - yk.mean()) ** 2))
        return 1.0 - float(np.sum((pred[keep] - yk) ** 2)) / tot if tot > 0 else float("nan")


def _values(given: np.ndarray) -> np.ndarray:
    return np.unique(given[~np.isnan(given)] if given.dtype.kind == "f" else given)


def _key(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
