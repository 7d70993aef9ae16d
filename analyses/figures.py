"""Figures: each function returns a matplotlib Figure; :func:`save_figure` exports it atomically.

* :func:`state_trajectory` -- along one string, the automaton's depth (and top bracket) against a
  probe's readout per layer, with the string's symbols on the x axis;
* :func:`state_projection` -- 2-D projections (PCA) of per-step states coloured by depth, one panel
  per model (a trained model beside the construction);
* :func:`probe_heatmap` -- probe accuracy by layer x site (one panel per variable);
* :func:`iia_heatmap` -- interchange intervention accuracy by layer x split position;
* :func:`length_curves` -- task accuracy and probe accuracy against string length;
* :func:`das_rank_curves`, :func:`patching_heatmap` -- DAS rank sweeps and activation patching.

Colours are the Okabe-Ito colour-blind-safe palette; sizes are set for a paper column (3.4 in)
or page (7 in) width with 8-9 pt text.

The trajectory and projection figures of a Dyck model beside the construction have their command
line in :mod:`analyses.dyck_trajectory`.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.utils.extmath import randomized_svd  # noqa: E402

from languages.io import atomic_write  # noqa: E402

# Okabe-Ito, with its yellow moved last (hard to see on white as a line colour).
OKABE_ITO = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442"]
FORMATS = ("png", "svg", "pdf")

plt.rcParams.update({
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO),
    "figure.dpi": 150, "savefig.bbox": "tight",
})


def save_figure(fig: "plt.Figure", path: str | Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``path.<fmt>`` for each format atomically (temp file + rename); returns the paths."""
    written = []
    path = Path(path)
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown figure format {fmt!r}; expected one of {FORMATS}")
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt)
        data = buf.getvalue()

        def write(tmp: str, data: bytes = data) -> None:
            with open(tmp, "wb") as fh:
                fh.write(data)

        written.append(atomic_write(path.with_suffix(f".{fmt}"), write))
    return written


def state_trajectory(string: str, depth: Sequence[float], readouts: Mapping[str, Sequence[float]], *,
                     top: Optional[Sequence[Any]] = None, top_readouts: Optional[Mapping[str, Sequence[Any]]] = None,
                     title: str = "", max_ticks: int = 80) -> "plt.Figure":
    """True depth (thick line) vs probe readouts (one line per layer/site) along ``string``.

    ``depth`` and each readout have ``len(string) + 1`` entries (BOS first). With ``top``, a second
    panel marks where each readout's top-bracket prediction is wrong.
    """
    n = len(depth)
    x = np.arange(n)
    rows = 2 if top is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(7.0, 2.2 * rows), sharex=True, squeeze=False)
    ax = axes[0, 0]
    ax.step(x, depth, where="mid", color=OKABE_ITO[0], lw=2.2, label="automaton depth")
    for k, (label, r) in enumerate(readouts.items()):
        ax.plot(x, r, lw=1.0, color=OKABE_ITO[(k + 1) % len(OKABE_ITO)], label=label, alpha=0.9)
    ax.set_ylabel("depth")
    ax.legend(loc="upper right", ncol=min(3, len(readouts) + 1), frameon=False)
    if title:
        ax.set_title(title)
    if top is not None:
        axt = axes[1, 0]
        labels = sorted({t for t in top if t is not None})
        code = {t: i + 1 for i, t in enumerate(labels)}
        axt.scatter(x, [code.get(t, 0) for t in top], s=6, color=OKABE_ITO[0], label="automaton top")
        for k, (label, r) in enumerate((top_readouts or {}).items()):
            wrong = [i for i in range(n) if r[i] != top[i]]
            axt.scatter(wrong, [code.get(top[i], 0) for i in wrong], s=14, marker="x",
                        color=OKABE_ITO[(k + 1) % len(OKABE_ITO)], label=f"{label}: wrong")
        axt.set_yticks(range(len(labels) + 1), ["none"] + [str(t) for t in labels])
        axt.set_ylabel("top bracket")
        axt.legend(loc="upper right", frameon=False, ncol=3)
    bottom = axes[-1, 0]
    symbols = ["BOS"] + list(string)
    step = max(1, n // max_ticks)
    bottom.set_xticks(x[::step], symbols[::step], fontfamily="monospace")
    bottom.set_xlabel("position (symbol read)")
    fig.tight_layout()
    return fig


def principal_axes(xc: np.ndarray, k: int, *, exact_below: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` principal axes ``[k', d]`` and singular values ``[k']`` of centred rows ``xc [n, d]``
    (``k' = min(k, n, d)``). Small matrices get the full SVD (:func:`principal_axes_reference`); larger
    ones a seeded randomized SVD with power iterations, which finds the same leading axes (up to sign)
    at a small fraction of the cost (a full SVD of 2000 x 1024 states took seconds per figure panel)."""
    k = min(k, *xc.shape)
    if min(xc.shape) <= exact_below:
        return principal_axes_reference(xc, k)
    _, s, vt = randomized_svd(xc, n_components=k, n_oversamples=10, n_iter=7, random_state=seed)
    return vt, s


def principal_axes_reference(xc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`principal_axes` by the full SVD (the slow reference)."""
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    return vt[:k], s[:k]


def state_projection(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], *, title: str = "") -> "plt.Figure":
    """PCA to 2-D of each panel's states ``X [n, d]``, coloured by its depth labels ``[n]``."""
    k = len(panels)
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3.0), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, (label, (xs, depth)) in zip(axes[0], panels.items()):
        xs = np.asarray(xs, dtype=np.float64)
        xc = xs - xs.mean(0)
        axes2, s = principal_axes(xc, 2)
        p = xc @ axes2.T
        if p.shape[1] < 2:  # a one-dimensional state (e.g. a depth counter): plot it against zero
            p = np.concatenate([p, np.zeros((p.shape[0], 2 - p.shape[1]))], axis=1)
        var = (s ** 2).sum() / max(float((xc ** 2).sum()), 1e-30)
        sc = ax.scatter(p[:, 0], p[:, 1], c=depth, s=4, cmap=cmap, alpha=0.8, linewidths=0)
        ax.set_title(f"{label}\n(PC1-2: {100 * var:.0f}% of variance)")
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
        fig.colorbar(sc, ax=ax, label="depth", fraction=0.046)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def probe_heatmap(records: Sequence[Mapping[str, Any]], *, value: str = "score", title: str = "") -> "plt.Figure":
    """Probe scores by layer (rows) x site (columns), one panel per variable."""
    variables = sorted({r["variable"] for r in records})
    fig, axes = plt.subplots(1, len(variables), figsize=(3.2 * len(variables), 2.6), squeeze=False)
    for ax, var in zip(axes[0], variables):
        rs = [r for r in records if r["variable"] == var]
        layers = sorted({r["layer"] for r in rs}, key=lambda v: (v is None, v))
        sites = sorted({short_site(r["site"]) for r in rs})
        grid = np.full((len(layers), len(sites)), np.nan)
        for r in rs:
            grid[layers.index(r["layer"]), sites.index(short_site(r["site"]))] = r[value]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="cividis", aspect="auto")
        for i in range(len(layers)):
            for j in range(len(sites)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center",
                            color="white" if grid[i, j] < 0.6 else "black", fontsize=7)
        ax.set_xticks(range(len(sites)), sites, rotation=30, ha="right")
        ax.set_yticks(range(len(layers)), [f"layer {l + 1}" if isinstance(l, int) else str(l) for l in layers])
        ax.set_title(var)
        fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def iia_heatmap(iia: np.ndarray, layers: Sequence[str], positions: Sequence[Any], *, title: str = "",
                xlabel: str = "split position", rotation: int = 90) -> "plt.Figure":
    """IIA by layer (rows) x column (default: split position; pass ``positions`` as column names and
    ``xlabel=""`` for other columns, e.g. IIA and its baseline)."""
    fig, ax = plt.subplots(figsize=(max(3.4, 0.35 * len(positions) + 1.5), 0.5 * len(layers) + 1.2))
    im = ax.imshow(np.asarray(iia, dtype=float), vmin=0, vmax=1, cmap="cividis", aspect="auto")
    ax.set_yticks(range(len(layers)), list(layers))
    ax.set_xticks(range(len(positions)), [str(p) for p in positions], rotation=rotation)
    ax.set_xlabel(xlabel)
    fig.colorbar(im, ax=ax, label="IIA", fraction=0.046)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def das_rank_curves(panels: Mapping[str, Sequence[Mapping[str, Any]]], *, title: str = "") -> "plt.Figure":
    """IIA against DAS rank, one panel per label (e.g. "model: variable @ site"), from
    :func:`probe.das_study.das_sweep` records: the learned subspace (in and out of distribution) beside
    the random and probe subspaces of the same rank, the whole-site swap and the random-pair baseline."""
    n = max(len(panels), 1)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.2 * rows), squeeze=False, sharey=True)
    lines = (("iia", "DAS", "o", 0), ("iia_ood", "DAS (longer)", "s", 1), ("iia_random_subspace", "random subspace", "v", 2),
             ("iia_probe_subspace", "probe subspace", "^", 3), ("baseline", "random pair", "x", 4))
    for ax, (label, recs) in zip(axes.flat, panels.items()):
        recs = sorted(recs, key=lambda r: r["rank"])
        ranks = [r["rank"] for r in recs]
        for key, name, marker, k in lines:
            ys = [np.nan if r.get(key) is None else r[key] for r in recs]
            ax.plot(ranks, ys, marker=marker, ms=3, lw=1, label=name, color=OKABE_ITO[(k + 1) % len(OKABE_ITO)])
        if recs and recs[0].get("iia_whole_swap") is not None:
            ax.axhline(recs[0]["iia_whole_swap"], color="grey", ls="--", lw=0.8, label="whole-site swap")
        ri = [r for r in recs if r.get("iia_random_init") is not None]
        if ri:
            ax.plot([r["rank"] for r in ri], [r["iia_random_init"] for r in ri], "k*", ms=6, label="random-init model")
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(label, fontsize=7)
        ax.set_xlabel("rank k")
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("IIA")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False, fontsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def patching_heatmap(scores: np.ndarray, layers: Sequence[str], *, tokens: Optional[Sequence[str]] = None,
                     title: str = "") -> "plt.Figure":
    """Layer x position activation patching (:func:`probe.patching.activation_patching`), normalised
    0 (corrupted run) .. 1 (clean run)."""
    scores = np.asarray(scores, dtype=float)
    fig, ax = plt.subplots(figsize=(max(3.4, 0.22 * scores.shape[1] + 1.5), 0.5 * len(layers) + 1.3))
    lim = max(1.0, float(np.nanmax(np.abs(scores))) if scores.size else 1.0)
    im = ax.imshow(scores, vmin=-lim, vmax=lim, cmap="RdBu_r", aspect="auto")
    ax.set_yticks(range(len(layers)), list(layers))
    ticks = list(range(scores.shape[1]))
    ax.set_xticks(ticks, list(tokens) if tokens is not None else [str(t) for t in ticks], fontsize=6)
    ax.set_xlabel("position patched")
    fig.colorbar(im, ax=ax, label="restored (0 corrupted, 1 clean)", fraction=0.046)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def length_curves(curves: Mapping[str, Sequence[tuple[float, float]]], *, train_max: Optional[float] = None,
                  ylabel: str = "accuracy", title: str = "") -> "plt.Figure":
    """Accuracy against length, one line per label from ``(length, accuracy)`` points; a dashed
    line marks the end of the training lengths."""
    fig, ax = plt.subplots(figsize=(3.4, 2.4))
    markers = "osD^v<>p"
    for k, (label, pts) in enumerate(curves.items()):
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[k % len(markers)], ms=3, lw=1.2,
                label=label, color=OKABE_ITO[(k + 1) % len(OKABE_ITO)])
    if train_max is not None:
        ax.axvline(train_max, color="grey", ls="--", lw=0.8)
        ax.text(train_max, 0.02, " train max", color="grey", fontsize=6, va="bottom")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("string length")
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def short_site(site: str) -> str:
    """A hook site's last part without ``hook_`` (``blocks.0.hook_ssm_state`` -> ``ssm_state``)."""
    return site.split(".")[-1].replace("hook_", "")
