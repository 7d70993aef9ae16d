"""Online-code description length of a probe target (Voita & Titov 2020, "Information-theoretic
probing with minimum description length").

The rows are shuffled (``seed``) and cut at ``t_i = round(fractions[i] * n)``. The first block
``[0, t_0)`` is sent with a uniform code; every later block ``[t_{i-1}, t_i)`` is sent with the code
of a probe trained on all rows before it. The online codelength is the sum; ``compression`` = uniform
codelength of all rows / online codelength (1 = nothing learned; larger = more extractable).

Classification: uniform code ``log2 K`` bits per row (K = number of classes in ``y``); a block costs
``-sum log2 p(y | x)`` under the probe. Classes absent from the training rows get probability 0 from the
probe, so every block's distribution is mixed with the uniform one, ``p = (1 - eps) p_probe + eps / K``
(``eps = 1e-3`` by default), which keeps every codelength finite.

Regression (documented choice): targets are discretised at ``resolution`` (1 for integer targets such
as depth or counters). The uniform code has one bin per ``resolution`` step over the observed range of
``y``; a block is sent with the probe's Gaussian N(prediction, sigma^2) integrated over each target's
bin, sigma^2 being the residual variance of the probe on its own training rows (floored at
``(resolution / 10)^2``), mixed with the uniform code with weight ``eps`` as above.

The probes use fixed hyperparameters (no CV inside the small early blocks): ``C`` for classification,
``alpha`` for ridge regression; pass ``probe=`` for any other scikit-learn estimator with
``predict_proba`` / ``predict``.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr
from sklearn.base import clone

from .linear import LogisticProbe, RidgeProbe

__all__ = ["DEFAULT_FRACTIONS", "online_code_length"]

DEFAULT_FRACTIONS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)


def online_code_length(X, y, kind: str = "classification", fractions=DEFAULT_FRACTIONS, seed: int = 0,
                       C: float = 1.0, alpha: float = 1.0, resolution: float = 1.0, eps: float = 1e-3,
                       probe=None, max_iter: int = 100) -> dict:
    """Online codelength of ``y`` given ``X`` (bits).

    Returns ``{"online_bits", "uniform_bits", "compression", "blocks": [(start, stop, bits), ...],
    "n", "kind"}``.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if kind == "regression":
        keep = ~np.isnan(y.astype(np.float64))
        X, y = X[keep], y[keep].astype(np.float64)
    n = len(y)
    if n < 2:
        raise ValueError("online code needs at least two rows")
    fr = np.asarray(sorted(fractions), dtype=np.float64)
    if fr[-1] != 1.0:
        fr = np.append(fr, 1.0)
    cuts = np.unique(np.clip(np.round(fr * n).astype(int), 1, n))
    perm = np.random.default_rng(seed).permutation(n)
    X, y = X[perm], y[perm]

    if kind == "classification":
        classes, codes = np.unique(y, return_inverse=True)
        K = len(classes)
        per_row_uniform = math.log2(K) if K > 1 else 0.0
        base = probe if probe is not None else LogisticProbe(Cs=(C,), max_iter=max_iter)
    elif kind == "regression":
        lo, hi = float(y.min()), float(y.max())
        n_bins = int(math.floor((hi - lo) / resolution + 1e-9)) + 1
        per_row_uniform = math.log2(n_bins) if n_bins > 1 else 0.0
        base = probe if probe is not None else RidgeProbe(alphas=(alpha,))
    else:
        raise ValueError(f"kind must be 'classification' or 'regression', got {kind!r}")

    blocks = [(0, int(cuts[0]), per_row_uniform * int(cuts[0]))]
    for start, stop in zip(cuts[:-1], cuts[1:]):
        start, stop = int(start), int(stop)
        Xtr, Xte = X[:start], X[start:stop]
        if kind == "classification":
            seen = np.unique(codes[:start])
            p = np.zeros((stop - start, K))
            if len(seen) == 1:
                p[:, seen[0]] = 1.0
            else:
                model = clone(base).fit(Xtr, codes[:start])
                p[:, np.asarray(model.classes_, dtype=int)] = model.predict_proba(Xte)
            p = (1.0 - eps) * p + eps / K
            bits = float(-np.log2(p[np.arange(stop - start), codes[start:stop]]).sum())
        else:
            if start >= 2:
                model = clone(base).fit(Xtr, y[:start])
                mu, resid = model.predict(Xte), y[:start] - model.predict(Xtr)
                sigma = max(float(np.std(resid)), resolution / 10)
            else:
                mu, sigma = np.full(stop - start, float(y[:start].mean())), max(hi - lo, resolution)
            t = y[start:stop]
            pg = ndtr((t + resolution / 2 - mu) / sigma) - ndtr((t - resolution / 2 - mu) / sigma)
            pr = (1.0 - eps) * pg + eps / n_bins
            bits = float(-np.log2(np.maximum(pr, 1e-300)).sum())
        blocks.append((start, stop, bits))

    online = float(sum(b for _, _, b in blocks))
    uniform = per_row_uniform * n
    return {
        "online_bits": online,
        "uniform_bits": uniform,
        "compression": uniform / online if online > 0 else float("inf"),
        "blocks": blocks,
        "n": n,
        "kind": kind,
    }
