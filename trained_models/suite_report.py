"""The suite's report: per-seed runs gathered into cells, mean and 95% interval beside the paper's numbers.

``<out>/<budget>/suite.csv``: one row per planned run (language x variant x seed; ``status`` done,
failed with its error, or missing) with the run's per-bin strict accuracy. ``<out>/<budget>/suite.md``:
per language class, each cell's mean over its seeds with a 95% Student-t interval (``mean [lo–hi]``;
t with n-1 degrees of freedom over the seeds' accuracies, clipped to [0, 100]; a single seed has no
interval), the paper's numbers beside them, a † where the paper's number lies outside our interval,
and the class's pattern summary. Both are written atomically; a folder that holds another budget's
report is refused (:class:`ReportConflict`), never overwritten.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import languages
from languages.io import atomic_write_text
from languages.paper import BEYOND_TRAINING, stored_commit
from trained_models.paper_numbers import CLASSES, PAPER, SUITE, paper_bins
from trained_models.suite_figure import write_figure
from trained_models.suite_fit import read_fits
from trained_models.suite_patterns import departure_lines
from trained_models.suite_plan import BINS, BUDGETS, VARIANT_LABELS, VARIANTS, group_name, plan
from trained_models.tables import markdown_table

LEVEL = 0.95
OUTSIDE = "†"


class ReportConflict(ValueError):
    """The report folder holds another budget's report."""


def t_interval(xs: list[float], level: float = LEVEL) -> tuple[float, Optional[float], Optional[float]]:
    """``(mean, lo, hi)``: the Student-t interval ``mean ± t_{(1+level)/2, n-1} · s / sqrt(n)`` (``s`` the
    sample standard deviation); ``lo = hi = None`` for fewer than two values."""
    if not xs:
        raise ValueError("t_interval of no values")
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return mean, None, None
    from scipy.stats import t

    s = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(t.ppf((1 + level) / 2, n - 1)) * s / math.sqrt(n)
    return mean, mean - half, mean + half


@dataclass
class Cell:
    """One language x variant: its finished seeds' results, its failed seeds' errors and its stale seeds
    (a result saved by other training arguments or data: not counted)."""

    language: str
    variant: str
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> saved result
    failed: dict[int, str] = field(default_factory=dict)  # seed -> error
    stale: set[int] = field(default_factory=set)

    @property
    def n(self) -> int:
        return len(self.runs)

    def values(self, b: str) -> list[float]:
        return [r["strict"][b] for _, r in sorted(self.runs.items()) if b in r["strict"]]

    def mean(self, b: str) -> Optional[float]:
        xs = self.values(b)
        return sum(xs) / len(xs) if xs else None

    def interval(self, b: str) -> tuple[Optional[float], Optional[float]]:
        """The 95% t-interval of bin ``b`` clipped to [0, 100], or ``(None, None)`` below two seeds."""
        xs = self.values(b)
        if len(xs) < 2:
            return None, None
        _, lo, hi = t_interval(xs)
        return max(0.0, lo), min(100.0, hi)

    def outside(self, b: str, paper: float) -> bool:
        """Whether the paper's number lies outside our interval (never with fewer than two seeds)."""
        lo, hi = self.interval(b)
        return lo is not None and not lo - 1e-9 <= paper <= hi + 1e-9


def collect(runs_dir: str | Path, budget: str, seeds: int = 1, paper_data: Optional[str | Path] = None
            ) -> dict[tuple[str, str], Cell]:
    """(language, variant) -> :class:`Cell` for the whole grid: seeds 0..seeds-1 and any further seed
    found on disk. ``paper_data``: the runs on the paper's stored strings (a clone of its repository)."""
    cells = {(x, v): Cell(x, v) for x in SUITE for v in VARIANTS}
    group = group_name(budget, paper_data is not None)
    found = max([seeds] + [_seed_of(p) + 1 for p in Path(runs_dir, group).glob("*/*.seed*.json")])
    # On the paper's strings only the languages with a folder: a clone need not hold the others' stored data.
    langs = None if paper_data is None else [x for x in SUITE if Path(runs_dir, group, x).is_dir()]
    if langs == []:
        return cells
    for run in plan(budget, runs_dir, langs, seeds=found, paper_data=paper_data):
        cell = cells[(run.language, run.variant)]
        status = run.status()
        if status == "done":
            cell.runs[run.seed] = run.saved()
        elif status == "stale":
            cell.stale.add(run.seed)
        elif run.failure_path.exists():
            cell.failed[run.seed] = json.loads(run.failure_path.read_text()).get("error", "?")
    return cells


def _seed_of(path: Path) -> int:
    stem = path.name.split(".seed", 1)[1].split(".", 1)[0]
    return int(stem) if stem.isdigit() else 0


CSV_FIELDS = ("language", "class", "variant", "budget", "data", "seed", "bin0", "bin1", "bin2", "train_seconds", "n_train",
              "steps", "wall_seconds", "stop_reason", "status", "error")


def csv_rows(cells: dict[tuple[str, str], Cell], budget: str, seeds: int, paper_data: bool = False
             ) -> list[dict[str, Any]]:
    """One row per run: every seed below ``seeds`` (done, failed or missing) and any further done seed;
    ``data`` says whose strings the runs trained and were tested on (``sampled``: ours; ``paper``: stored)."""
    rows = []
    for lang in SUITE:
        for variant in VARIANTS:
            cell = cells[(lang, variant)]
            for seed in sorted(set(range(seeds)) | set(cell.runs) | set(cell.failed) | cell.stale):
                row = {k: "" for k in CSV_FIELDS}
                row.update(language=lang, variant=variant, budget=budget, data=_data_name(paper_data), seed=seed,
                           status="missing",
                           **{"class": languages.get(lang).kind})
                r = cell.runs.get(seed)
                if r is not None:
                    row.update({b: f"{r['strict'][b]:.2f}" for b in BINS if b in r["strict"]})
                    row.update(train_seconds=r["train_seconds"], n_train=r["n_train"], steps=r["steps"],
                               wall_seconds=r["wall_seconds"], stop_reason=r["stop_reason"], status="done")
                elif seed in cell.failed:
                    row.update(status="failed", error=cell.failed[seed])
                elif seed in cell.stale:
                    row.update(status="stale", error="saved by other training arguments or data; retrained on the next call")
                rows.append(row)
    return rows


def _fmt(x: Optional[float]) -> str:
    if x is None:
        return "–"
    if x in (0.0, 100.0):
        return f"{x:g}"
    s = f"{x:.1f}"
    if s in ("0.0", "100.0"):  # never show a rounded-off 0 or 100
        s = f"{x:.2f}"
    return s


def _ours(cell: Cell, b: str) -> str:
    lo, hi = cell.interval(b)
    m = _fmt(cell.mean(b))
    return m if lo is None else f"{m} [{_fmt(lo)}–{_fmt(hi)}]"


def _cell_text(cell: Cell, n_bins: int, seeds: int) -> str:
    if not cell.n:
        return "failed" if cell.failed else "–"
    text = " / ".join(_ours(cell, b) for b in BINS[:n_bins] if cell.values(b))
    return text + (f" (n={cell.n})" if cell.n != seeds else "")


def _paper_text(lang: str, variant: str, cell: Cell, n_bins: int) -> str:
    bins = paper_bins(lang, VARIANTS[variant][1])
    parts = [f"{bins[b]:g}" + (OUTSIDE if cell.outside(b, bins[b]) else "") for b in BINS[:n_bins] if b in bins]
    text = " / ".join(parts)
    if variant == "transformer" and PAPER[lang]["transformer_pos"]:
        text += f" ({PAPER[lang]['transformer_pos']})"
    return text


def _data_name(paper_data) -> str:
    return "paper" if paper_data else "sampled"


def render_md(cells: dict[tuple[str, str], Cell], budget: str, runs_dir: str | Path, seeds: int,
              paper_data: Optional[str | Path] = None, sampled: Optional[dict[tuple[str, str], Cell]] = None,
              fits: Optional[dict] = None) -> str:
    """The markdown report. ``paper_data``: ``cells`` are runs on the paper's stored strings (a clone of its
    repository); ``sampled``: the same budget's runs on our sampler's strings, set beside them cell by cell;
    ``fits``: the runs' accuracy on their own training strings (:mod:`trained_models.suite_fit`)."""
    b = BUDGETS[budget]
    group = group_name(budget, paper_data is not None)
    total = len(SUITE) * len(VARIANTS) * seeds
    done = sum(min(c.n, seeds) for c in cells.values())
    extra = sum(max(0, c.n - seeds) for c in cells.values())
    failed = sum(len(c.failed) for c in cells.values())
    stale = sum(len(c.stale) for c in cells.values())
    results = [r for c in cells.values() for r in c.runs.values()]
    walls = [r["wall_seconds"] for r in results]
    trains = [r["train_seconds"] for r in results]
    seeds_text = (f"{seeds} seeds a cell (0–{seeds - 1}): mean and 95% Student-t interval over the seeds "
                  f"(`mean [lo–hi]`, clipped to 0–100)" if seeds > 1 else "seed 0, one run per cell (no interval)")
    lines = [
        "# The Bhattamishra suite" + (" on the paper's stored strings" if paper_data else "")
        + ": our runs beside the paper's",
        "",
        f"Generated by `python -m trained_models.suite --budget {budget} --seeds {seeds}"
        + (" --paper-data REPO" if paper_data else "") + f"` from `{Path(runs_dir) / group}/`. Budget **{budget}**: "
        f"{b.describe()}; {seeds_text}; CPU, one torch thread a run.",
    ]
    if paper_data:
        lines += ["", f"**Data: the paper's stored strings** (`generated_ds/` of `lacoco-lab/ssm_expressivity` at "
                  f"commit `{stored_commit(paper_data)[:12]}`), not our sampler's: each run trains, stops early and "
                  "is tested on them as `trained_models.train --paper-data` takes them (`trained_models.config."
                  "stored_splits`): up to the budget's number of each stored test bin, a dev split of stored "
                  "training strings in no test bin, and up to the budget's number of the other stored training "
                  "strings; every stored test-bin string is kept out of train and dev, so bin0 stays held out. "
                  "Where the budget above speaks of windows, read the stored files: a smaller stored file gives "
                  "fewer training strings, and the step budget follows. Targets are ours (correct) for every "
                  "language. Only the cells listed in `suite.csv` as done were run."]
    if b.differs:
        lines += ["", "Where this budget departs from the paper's protocol:", "",
                  *[f"* {d}" for d in b.differs]]
    lines += [
        "",
        "Strict accuracy in % (a string counts only if the allowed-next set is right at every position), "
        "`bin0 / bin1` (counter languages `bin0 / bin1 / bin2`): bin0 = held-out strings of the training "
        "lengths (none of them in the early-stopping dev split), "
        + ("bin1 and bin2 = the paper's stored later bins: longer strings, except that for "
           + ", ".join(f"{PAPER[x]['label']}" for x in BEYOND_TRAINING) + " the stored bin1 keeps the training "
           "window's lower bound, so part of it lies at training lengths (`results/paper_data.md`; our sampler's "
           "bin1 starts above the training window). " if paper_data else
           "bin1 and bin2 = longer strings (the paper's windows: `languages.paper`, `results/paper_data.md`). ")
        + "Ours: Mamba with 1–3 layers "
        "(non-negative gates, as in the paper), Mamba 2L with signed gates, and our 2-layer Transformer "
        "(TransformerLens) re-run with Bhattamishra et al.'s positional variant. Paper: Sarrof et al.'s Mamba "
        "(`main_expt_results.xlsx`) and Bhattamishra et al.'s Transformer as copied by the paper "
        "(`trained_models/paper_numbers.py`; pos mask = no positional encoding, pos enc = with). "
        f"{OUTSIDE}: the paper's number lies outside our 95% interval (cells with at least two seeds). "
        "`(n=k)`: the cell has k finished seeds, not the planned number.",
        "",
        f"**Runs done: {done} of {total}; {total - done} missing (shown as –)"
        + (f", of which {failed} failed (errors in `suite.csv`)" if failed else "")
        + (f", {stale} with a result saved by other training arguments or data (stale: not counted, retrained "
           "on the next call)" if stale else "") + ".**"
        + (f" (Plus {extra} runs of further seeds, included in the means.)" if extra else "")
        + _active_text(cells, seeds)
        + (f" Train time {sum(trains) / 60:.1f} min, wall time {sum(walls) / 60:.1f} min over the done runs "
           f"(per run: median {sorted(walls)[len(walls) // 2]:.0f} s, max {max(walls):.0f} s)." if walls else ""),
    ]
    titles = {"star-free": "Star-free regular languages", "non-star-free": "Non-star-free regular languages",
              "counter": "Counter languages"}
    paper_variants = [v for v in VARIANTS if VARIANTS[v][1]]
    for cls in CLASSES:
        langs = [x for x in SUITE if languages.get(x).kind == cls]
        nb = 3 if cls == "counter" else 2
        lines += ["", f"## {titles[cls]} ({len(langs)})", ""]
        head = ["Language"] + [f"ours {VARIANT_LABELS[v]}" for v in VARIANTS] + \
               [f"paper {VARIANTS[v][1]}" for v in paper_variants]
        lines += markdown_table(head, ([f"{PAPER[lang]['label']} (`{lang}`)"]
                                       + [_cell_text(cells[(lang, v)], nb, seeds) for v in VARIANTS]
                                       + [_paper_text(lang, v, cells[(lang, v)], nb) for v in paper_variants]
                                       for lang in langs))
        lines += ["", *pattern_lines(cls, langs, cells)]
    lines += ["", *departure_lines(cells, _fmt, paper_data=bool(paper_data), fits=fits, budget=budget)]
    if sampled is not None:
        lines += ["", *data_comparison_lines(cells, sampled, budget)]
    lines += ["", "Transformer positional encoding (ours): `none` (causal masking only) except "
              + ", ".join(f"`{x}`" for x in SUITE if PAPER[x]["transformer_pos"] == "pos enc")
              + " (`learned`), following the variant the paper's Transformer numbers come from.", ""]
    return "\n".join(lines)


def _active_text(cells: dict[tuple[str, str], Cell], seeds: int) -> str:
    """Progress over the variants and languages that have any run (a column or row nobody has started is not
    "missing" work of the ones being run); empty when every variant and language has one."""
    def started(x: str, v: str) -> bool:
        return bool(cells[(x, v)].n or cells[(x, v)].failed)

    active = [v for v in VARIANTS if any(started(x, v) for x in SUITE)]
    langs = [x for x in SUITE if any(started(x, v) for v in VARIANTS)]
    if not active or (len(active) == len(VARIANTS) and len(langs) == len(SUITE)):
        return ""
    done = sum(min(cells[(x, v)].n, seeds) for x in langs for v in active)
    which = (f"the {_count(len(active), 'variant')} with runs "
             f"({', '.join(VARIANT_LABELS[v] for v in active)})")
    if len(langs) < len(SUITE):
        which += f" on the {_count(len(langs), 'language')} with runs ({', '.join(f'`{x}`' for x in langs)})"
    return f" Counting only {which}: {done} of {len(langs) * len(active) * seeds} done."


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _mean(xs: list[float]) -> Optional[float]:
    return sum(xs) / len(xs) if xs else None


def pattern_lines(cls: str, langs: list[str], cells: dict[tuple[str, str], Cell]) -> list[str]:
    """The class's summary statistics (means of the cells' seed means), ours beside the paper's on the
    same languages."""
    stats = {"star-free": ["bin1"], "non-star-free": ["bin0", "bin1"], "counter": ["bin0", "bin1"]}[cls]
    what = {"star-free": "Pattern (paper: Mamba 100 / 100 on every star-free language): mean bin1",
            "non-star-free": "Pattern (paper: Mamba fails even in distribution): mean bin0 and bin1",
            "counter": "Pattern (paper: Mamba fits bin0 but does not length-generalize; Transformers do): "
                       "mean bin0 vs bin1"}[cls]
    head = ["mean over the languages done"] + [VARIANT_LABELS[v] for v in VARIANTS]
    rows = []
    for b in stats:
        ours_row, paper_row = [f"ours {b}"], [f"paper {b}"]
        for v in VARIANTS:
            done = [x for x in langs if cells[(x, v)].n]
            ours = _mean([cells[(x, v)].mean(b) for x in done])
            ours_row.append(f"{_fmt(ours)} (n={len(done)})" if done else "–")
            col = VARIANTS[v][1]
            paper_row.append(_fmt(_mean([PAPER[x][col][b] for x in done])) if col and done else "–")
        rows += [ours_row, paper_row]
    out = [f"{what} (each cell's seed mean), ours vs the paper's on the same languages:", "",
           *markdown_table(head, rows)]
    # One sentence per family, all layer counts pooled (the paper's claim is about Mamba as such).
    families = {"Mamba (non-negative, 1–3 layers pooled)": ["mamba-1l", "mamba-2l", "mamba-3l"],
                "Mamba 2L signed": ["mamba-signed-2l"], "Transformer": ["transformer"]}
    parts = []
    for name, vs in families.items():
        done = [cells[(x, v)] for v in vs for x in langs if cells[(x, v)].n]
        if not done:
            continue
        ours = " / ".join(f"{b} {_fmt(_mean([c.mean(b) for c in done]))}" for b in stats)
        cols = [VARIANTS[c.variant][1] for c in done]
        paper = (" (paper, same cells: " + " / ".join(
            f"{b} {_fmt(_mean([PAPER[c.language][col][b] for c, col in zip(done, cols)]))}" for b in stats) + ")"
                 ) if all(cols) else ""
        parts.append(f"{name}: {ours} over {len(done)} cells{paper}")
    if parts:
        out += ["", "Summary: " + "; ".join(parts) + "."]
    return out


def data_comparison_lines(paper_cells: dict[tuple[str, str], Cell], sampled: dict[tuple[str, str], Cell],
                          budget: str) -> list[str]:
    """Every cell run on the paper's stored strings beside the same cell on our sampler's strings (same
    budget, windows and seeds) and the paper's number: what a result owes to the strings."""
    head = ["language", "variant", "ours, our strings", "ours, the paper's strings", "paper"]
    rows = []
    for lang in SUITE:
        nb = 3 if languages.get(lang).kind == "counter" else 2
        for v in VARIANTS:
            cell = paper_cells[(lang, v)]
            if not cell.n:
                continue
            col = VARIANTS[v][1]
            paper = " / ".join(f"{x:g}" for b, x in paper_bins(lang, col).items() if b in BINS[:nb]) if col else "–"
            rows.append([f"`{lang}`", VARIANT_LABELS[v], _cell_text(sampled[(lang, v)], nb, 0),
                         _cell_text(cell, nb, 0), paper])
    lines = [f"## The same cells on our sampler's strings (`{group_name(budget, False)}/`) and on the paper's", "",
             "Same budget, planned seeds and length windows; the strings differ: our sampler draws uniformly over "
             "lengths and then over each length's strings (the paper's support), the paper's generators draw "
             "their own way (`results/paper_data.md`). With them differ the training-set size where a stored file "
             "holds fewer strings (and the step budget with it), and, for the languages whose stored bin1 keeps the "
             "training window's lower bound, the lengths in bin1. Each side is tested on its own strings. "
             "`(n=k)`: k finished seeds. Paper: Sarrof et al.'s Mamba and, for the Transformer, Bhattamishra et "
             "al.'s numbers, each on the paper's own data.", ""]
    return lines + (markdown_table(head, rows) if rows else ["No cell has run on the paper's strings yet."])


def report_dir(out: str | Path, budget: str, paper_data: bool = False) -> Path:
    return Path(out) / group_name(budget, paper_data)


def check_report_target(out: str | Path, budget: str, paper_data: bool = False) -> Path:
    """The folder ``budget``'s report goes to (``paper_data``: the report of the runs on the paper's stored
    strings); :class:`ReportConflict` if it holds another budget's or other data's (a ``suite.csv`` without a
    ``data`` column is of our sampler's strings)."""
    folder = report_dir(out, budget, paper_data)
    path = folder / "suite.csv"
    want = (budget, _data_name(paper_data))
    if path.exists():
        with open(path, newline="") as fh:
            found = {(row.get("budget"), row.get("data") or "sampled") for row in csv.DictReader(fh)}
        if found - {want}:
            other = sorted(f"{b} ({d} strings)" for b, d in found - {want})
            raise ReportConflict(f"--out: {path} holds the report of {', '.join(other)}, not {want[0]} ({want[1]} "
                                 "strings); refusing to overwrite it (choose another --out)")
    return folder


FIGURE_VARIANTS = ("mamba-3l", "transformer")  # the two the paper's Figure 5 shows


def write_report(out: str | Path, runs_dir: str | Path, budget: str, seeds: int = 1,
                 figures: bool = True, paper_data: Optional[str | Path] = None) -> dict[str, Path]:
    """Render ``budget``'s report into ``<out>/<budget>/`` (atomically; refused over another budget's):
    ``suite.csv``, ``suite.md`` and, with ``figures``, ``figure5_<variant>.{png,svg}``. ``paper_data`` (a
    clone of the paper's repository): the report of the runs on its stored strings, into
    ``<out>/<budget>-paper-data/``, with each cell beside the same cell on our sampler's strings."""
    folder = check_report_target(out, budget, paper_data is not None)
    cells = collect(runs_dir, budget, seeds, paper_data)
    sampled = collect(runs_dir, budget, seeds) if paper_data is not None else None
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(cells, budget, seeds, paper_data is not None))
    md = render_md(cells, budget, runs_dir, seeds, paper_data, sampled, read_fits(folder))
    paths = {}
    if figures:
        for v in FIGURE_VARIANTS:
            label = budget if paper_data is None else f"{budget}, the paper's stored strings"
            paths.update({f"{v}.{k}": p for k, p in write_figure(cells, label, folder, v).items()})
        md += ("\nFigures (the paper's Figure 5 view, bin0 / bin1 ours beside the paper's, 95% intervals): "
               + ", ".join(f"[{VARIANT_LABELS[v]}](figure5_{v}.svg)" for v in FIGURE_VARIANTS) + ".\n")
    other = report_dir(out, budget, paper_data is None) / "suite.md"
    if other.exists():  # the same budget on the other strings: link it
        md += ("\nThe same plan on " + ("the paper's stored strings" if paper_data is None else "our sampler's strings")
               + f": [`{other.parent.name}/suite.md`](../{other.parent.name}/suite.md).\n")
    paths["csv"] = atomic_write_text(folder / "suite.csv", buf.getvalue())
    paths["md"] = atomic_write_text(folder / "suite.md", md)
    return paths
