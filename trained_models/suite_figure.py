"""The paper's Figure 5 view of the suite: per language class, bin0 / bin1 bars, ours beside the paper's.

One panel per class (star-free, non-star-free, counter), one group of four bars per language: our
bin0 (mean over the seeds, with its 95% t-interval as an error bar where the cell has two seeds or
more), the paper's bin0, our bin1, the paper's bin1, for one variant (default Mamba 3L: the paper's
figure plots its 3-layer Mamba; the Transformer, or any variant with a paper column, works too).
Zeros are drawn as zeros (the paper's figure lifts them to 1% for visibility); a language whose cell
has no finished run has no "ours" bars. Written as PNG and SVG, atomically.
"""
from __future__ import annotations

from pathlib import Path

import languages
from languages.io import atomic_write
from trained_models.paper_numbers import CLASSES, PAPER, SUITE, paper_bins
from trained_models.suite_plan import VARIANT_LABELS, VARIANTS

TITLES = {"star-free": "Star-free languages", "non-star-free": "Non-star-free languages",
          "counter": "Counter languages"}
# (bin, whose): colour; ours solid, the paper's lighter and hatched
STYLE = {("bin0", "ours"): ("#1f5a99", None), ("bin0", "paper"): ("#9ec3ea", "//"),
         ("bin1", "ours"): ("#c0561b", None), ("bin1", "paper"): ("#f4b890", "//")}


def draw(cells: dict, budget: str, variant: str = "mamba-3l"):
    """The figure (matplotlib ``Figure``) for ``cells`` (:func:`trained_models.suite_report.collect`)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np


    column = VARIANTS[variant][1]
    if column is None:
        raise ValueError(f"{variant!r} has no paper column; choose one of "
                         f"{[v for v in VARIANTS if VARIANTS[v][1]]}")
    by_class = {c: [x for x in SUITE if languages.get(x).kind == c] for c in CLASSES}
    fig, axes = plt.subplots(len(CLASSES), 1, figsize=(13, 11), constrained_layout=True)
    width = 0.2
    for ax, cls in zip(axes, CLASSES):
        langs = by_class[cls]
        x = np.arange(len(langs))
        for k, (b, whose) in enumerate(STYLE):
            colour, hatch = STYLE[(b, whose)]
            heights, err_lo, err_hi = [], [], []
            for lang in langs:
                cell = cells[(lang, variant)]
                if whose == "paper":
                    h, lo, hi = paper_bins(lang, column)[b], None, None
                else:
                    h = cell.mean(b)
                    lo, hi = cell.interval(b)
                heights.append(np.nan if h is None else h)
                err_lo.append(np.nan if lo is None else h - lo)  # NaN: no error bar drawn
                err_hi.append(np.nan if hi is None else hi - h)
            label = f"{'ours' if whose == 'ours' else 'paper'} {b}"
            ax.bar(x + (k - 1.5) * width, heights, width, color=colour, hatch=hatch, edgecolor="white",
                   linewidth=0.5, label=label,
                   yerr=np.array([err_lo, err_hi]) if whose == "ours" else None,
                   error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "black"})
        ax.set_xticks(x, [PAPER[lang]["label"] for lang in langs], rotation=20, ha="right", fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel("strict accuracy (%)")
        ax.set_title(TITLES[cls], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, ncol=4, fontsize=9, loc="outside lower center")
    seeds = sorted({c.n for c in cells.values() if c.n})
    fig.suptitle(f"{VARIANT_LABELS[variant]}: ours (budget {budget}, seeds per cell: "
                 f"{', '.join(map(str, seeds)) or 'none yet'}; error bars: 95% t-interval) vs the paper's "
                 f"{column}", fontsize=11)
    return fig


def write_figure(cells: dict, budget: str, folder: str | Path, variant: str = "mamba-3l") -> dict[str, Path]:
    """``<folder>/figure5_<variant>.png`` and ``.svg``, written atomically."""
    import matplotlib.pyplot as plt

    fig = draw(cells, budget, variant)
    try:
        paths = {}
        # SVG text as text (smaller, searchable); a fixed id salt and no date, so that re-rendering the same
        # numbers writes the same bytes (a re-rendered report shows in git only where a number moved)
        with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "automata-lens"}):
            for fmt in ("png", "svg"):
                path = Path(folder) / f"figure5_{variant}.{fmt}"
                meta = {"Date": None} if fmt == "svg" else None
                paths[fmt] = atomic_write(path, lambda tmp, fmt=fmt, meta=meta: fig.savefig(tmp, format=fmt, dpi=100,
                                                                                        metadata=meta))
        return paths
    finally:
        plt.close(fig)
