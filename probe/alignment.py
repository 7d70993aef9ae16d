"""How well one model's states match another's (a trained model vs a construction), per layer.

Two measures on activations of the same strings at the same positions (rows aligned):

* linear-map R², both directions: fit ridge ``Y ~ X`` on a train split of sequences, report the
  variance-weighted R² on held-out sequences; ``r2_xy`` says how much of Y (e.g. the construction's
  state) is linearly readable from X (the trained state), ``r2_yx`` the converse;
* linear CKA (Kornblith et al. 2019): ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` on centred
  features; invariant to rotations and isotropic scaling, 1 for identical representations.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between row-aligned ``x [n, p]`` and ``y [n, q]``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same rows (positions), got {x.shape[0]} and {y.shape[0]}")
    x = x - x.mean(0)
    y = y - y.mean(0)
    # Feature-space form (cheap when n >> p, q).
    cross = np.linalg.norm(y.T @ x, "fro") ** 2
    nx = np.linalg.norm(x.T @ x, "fro")
    ny = np.linalg.norm(y.T @ y, "fro")
    if nx == 0 or ny == 0:
        return 0.0
    return float(cross / (nx * ny))


def linear_map_r2(x: np.ndarray, y: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray,
                  alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)) -> float:
    """Held-out variance-weighted R² of a ridge map from ``x`` to ``y`` (features standardised)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y, dtype=np.float64)
    keep = y[train_idx].std(0) > 1e-12  # constant targets carry no information to predict
    if not keep.any():
        return float("nan")
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas))
    model.fit(np.asarray(x[train_idx], dtype=np.float64), y[train_idx][:, keep])
    pred = model.predict(np.asarray(x[test_idx], dtype=np.float64))
    return float(r2_score(y[test_idx][:, keep], pred, multioutput="variance_weighted"))


def alignment_scores(x: np.ndarray, y: np.ndarray, seq_id: np.ndarray, *, test_size: float = 0.25,
                     seed: int = 0, max_rows: Optional[int] = 20_000) -> dict[str, float]:
    """R² both ways (split by sequence) and linear CKA between row-aligned activations."""
    seq_id = np.asarray(seq_id)
    rng = np.random.default_rng(seed)
    rows = np.arange(len(seq_id))
    if max_rows is not None and len(rows) > max_rows:
        rows = np.sort(rng.choice(rows, max_rows, replace=False))
    seqs = np.unique(seq_id[rows])
    test_seqs = set(rng.choice(seqs, max(1, int(round(test_size * len(seqs)))), replace=False).tolist())
    is_test = np.array([s in test_seqs for s in seq_id[rows]])
    tr, te = rows[~is_test], rows[is_test]
    if len(tr) == 0 or len(te) == 0:
        raise ValueError("alignment needs at least two sequences")
    return {
        "r2_xy": linear_map_r2(x, y, tr, te),
        "r2_yx": linear_map_r2(y, x, tr, te),
        "cka": linear_cka(x[rows], y[rows]),
    }
