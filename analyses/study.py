"""The skeleton every study in :mod:`analyses` runs on: its command line, its run and its outputs.

A study (``dyck_probe``, ``flipflop_probe``, ``counter_probe``, ``parity_probe``) is a ``Settings``
dataclass, a ``run(names, st, out, formats, progress, figures)`` and a ``to_markdown(report)``; this
module holds what they share, so each study holds only its own measurements:

* CLI: :func:`base_parser` (``--model`` repeatable, ``--n``, ``--seed``, ``--out``, ``--format``,
  ``--quick``, ``--no-progress``, ``--no-figures``, ``--jobs``), :func:`settings_from_args` (the settings, the
  named models checked first), :func:`run_cli` (run, print the report, name the files written),
  :func:`parse_window`, :func:`configure_threads`.
* The run: :func:`start` (``--out`` checked before anything is computed, threads set),
  :func:`model_sections` (each model's section of the report, in worker processes with ``--jobs``),
  :func:`card_summary`, :func:`finish` (figures and report written together).
* Reports: :func:`fmt`, :func:`md_table`, :func:`short_site`, :func:`finish_report` (run time, peak
  memory), :func:`write_report` (``report.json`` and ``report.md``, each atomically),
  :func:`safe_figures` (a failing figure never loses the report), :func:`save_and_close`;
  :func:`study_output` (a run's report and figures written together, into a temporary folder moved
  onto ``--out`` at the end) and :func:`check_study_out` (``--out`` checked before anything is computed).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from analyses.figures import FORMATS, save_figure, short_site  # noqa: F401 (short_site: for the studies)
from analyses.parallel import default_jobs, run_tasks
from languages import cli
from languages.io import StagedDir, atomic_write_json, atomic_write_text, check_writable
from trained_models.registry import resolve
from trained_models.run_folder import trained_runs
from trained_models.tables import markdown_table

# --------------------------------------------------------------------------- CLI


def configure_threads() -> None:
    """Torch threads: ``OMP_NUM_THREADS`` when set, else at most 2 (the studies' tensors are small)."""
    n = os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(max(1, int(n)) if n and n.isdigit() else min(2, os.cpu_count() or 1))


def parse_window(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX, got {text!r}") from None
    if not 0 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"need 0 <= MIN <= MAX, got {text!r}")
    return lo, hi


def base_parser(prog: str, doc: str, default_out: str) -> argparse.ArgumentParser:
    """The flags every study takes; the description is the first sentence of ``doc`` (the module
    docstring), however many lines it spans."""
    first = " ".join((doc or "").strip().split("\n\n")[0].split())
    ap = cli.ArgumentParser(prog=prog, description=first,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="shipped name or run directory (repeatable; "
                    "default: the study's shipped models, the missing ones skipped; a named one must exist)")
    ap.add_argument("--n", type=cli.positive_int, help="strings per evaluation set")
    ap.add_argument("--seed", type=cli.nonnegative_int, default=0)
    ap.add_argument("--out", default=default_out, type=cli.out_dir, help=f"output folder (default {default_out})")
    ap.add_argument("--format", action="append", choices=FORMATS, help="figure format, repeatable (default png)")
    ap.add_argument("--quick", action="store_true", help="a smaller, faster pass")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--jobs", type=cli.positive_int, default=default_jobs(),
                    help="worker processes, one model each, one torch thread each (default %(default)s here; 1: "
                         "everything in this process); the report is the same for any value")
    return ap


def trained_run_dirs(folders: Sequence[str | Path], hint: str) -> list[Path]:
    """The finished training runs directly under ``folders`` (:func:`trained_models.run_folder.trained_runs`);
    finding none is a usage error that says how to train them (``hint``)."""
    dirs = [d for folder in folders for d in trained_runs(folder)]
    if not dirs:
        raise cli.UsageError(f"no trained runs under {', '.join(map(str, folders))}: {hint}")
    return dirs


def write_generated(out: str | Path, prog: str, argv: Optional[Sequence[str]], render: Callable[[str], str]) -> Path:
    """Write ``render(command)`` to ``out`` atomically, ``command`` being the command line that made it
    (``prog`` and ``argv``), and say so."""
    command = prog + (" " + " ".join(argv) if argv else "")
    path = atomic_write_text(out, render(command))
    print(f"wrote {path}")
    return path


def bucket_label(lo: int, hi: int) -> str:
    """A bucket's name in a report: ``"0"``, ``"3–8"``, ``"≥17"`` (an upper bound of 10**9 or more is open)."""
    return str(lo) if lo == hi else (f"≥{lo}" if hi >= 10**9 else f"{lo}–{hi}")


def by_bucket(ok: np.ndarray, values: np.ndarray, buckets: Sequence[tuple[int, int]]) -> list[tuple[float, int]]:
    """Per ``(lo, hi)`` bucket of ``values`` (inclusive): (mean of ``ok`` there, how many); NaN where empty."""
    out = []
    for lo, hi in buckets:
        sel = (values >= lo) & (values <= hi)
        out.append((float(ok[sel].mean()) if sel.any() else float("nan"), int(sel.sum())))
    return out


def check_models(names: Optional[Sequence[str]]) -> None:
    """Models named with ``--model`` must exist (only the study's default models may be missing and
    skipped): a ``FileNotFoundError`` naming the first missing one otherwise, before any computing."""
    for name in names or ():
        try:
            resolve(name)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"--model {name}: {e}") from None


def settings_from_args(cls: Any, args: argparse.Namespace, **kw: Any) -> Any:
    """``cls.quick(...)`` or ``cls(...)`` with ``seed``, ``n`` (when given) and ``kw``."""
    kw = dict(kw, seed=args.seed)
    if args.n is not None:
        kw["n"] = args.n
    check_models(args.model)
    return cls.quick(**kw) if args.quick else cls(**kw)


def run_cli(args: argparse.Namespace, st: Any, run: Callable[..., dict], default_models: Sequence[str],
            to_markdown: Callable[[dict], str], after: Optional[Callable[[dict], None]] = None) -> int:
    """Run a study from its parsed flags (:func:`base_parser`), print its report and the files written;
    ``after(report)``: what the study's own flags add (e.g. an extra table)."""
    out = Path(args.out)
    report = run(args.model or list(default_models), st, out, formats=args.format or ["png"],
                 progress=not args.no_progress, figures=not args.no_figures, jobs=args.jobs)
    print(to_markdown(report))
    print(f"Wrote {out / 'report.json'}, {out / 'report.md'} and {len(report.get('figures', []))} figure files.")
    if after is not None:
        after(report)
    return 0


# --------------------------------------------------------------------------- the run


def start(out: str | Path) -> float:
    """The start of a run: ``--out`` checked before anything is computed, torch threads set; returns
    the start time for :func:`finish`."""
    t0 = time.time()
    check_study_out(out)
    configure_threads()
    return t0


def model_sections(subjects: Sequence[Any], section: Callable[[Any], dict], jobs: int = 1, desc: str = "",
                   progress: bool = True) -> dict[str, dict]:
    """``{subject.name: section(subject)}`` in subject order, each section one task of
    :func:`analyses.parallel.run_tasks` on ``jobs`` worker processes (``jobs=1``: in this process)."""
    tasks = [(s.name, functools.partial(section, s)) for s in subjects]
    return dict(zip([s.name for s in subjects], run_tasks(tasks, jobs=jobs, desc=desc, progress=progress)))


def card_summary(card: dict, keys: Sequence[str] = ("train_command", "metrics")) -> dict:
    """The parts of a model card a report quotes."""
    return {k: card.get(k) for k in keys}


def finish(out: str | Path, report: dict, t0: float, to_markdown: Callable[[dict], str],
           figures: Iterable[Callable[[Path], list[Path]]] = ()) -> dict:
    """Write the run's figures (each ``make(folder)`` through :func:`safe_figures`) and its report into
    one staged folder that replaces ``out`` as a unit (:func:`study_output`); returns the report."""
    with study_output(out) as staged:
        for make in figures:
            safe_figures(report, lambda make=make: make(staged.dir), staged.final)
        finish_report(report, t0)
        write_report(staged.dir, report, to_markdown(report))
    return report


# --------------------------------------------------------------------------- reports


def end_markdown(report: dict, lines: list[str]) -> str:
    """A report's markdown: ``lines``, then the models skipped and a figure error, if any."""
    if report.get("skipped"):
        lines = lines + ["", "Skipped: " + "; ".join(report["skipped"])]
    if report.get("figure_error"):
        lines = lines + ["", f"Figure error: {report['figure_error']}"]
    return "\n".join(lines) + "\n"


def fmt(x: Any, digits: int = 2) -> str:
    """A table cell: floats with ``digits`` decimals, None / NaN as an en dash."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.{digits}f}"
    return str(x)


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 2) -> list[str]:
    """A markdown table as a list of lines (:func:`trained_models.tables.markdown_table`, cells through :func:`fmt`)."""
    return markdown_table(header, rows, cell=lambda v: fmt(v, digits))


def finish_report(report: dict, t0: float) -> dict:
    """Add the run time (s), this process's peak resident memory (MB) and, where worker processes ran
    (:mod:`analyses.parallel`), the largest worker's (each worker's resident memory counts the pages it
    shares with this process again)."""
    report["seconds"] = round(time.time() - t0, 1)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if workers:
        report["peak_rss_worker_mb"] = round(workers / 1024, 1)
    return report


REPORT_FILES = ("report.json", "report.md")


def check_study_out(out: str | Path) -> Path:
    """``--out`` checked before a study computes anything: a writable folder that is new, empty, or
    holds only a previous run's outputs (its ``report.json``, ``report.md`` and the figures that report
    lists), since :func:`study_output` replaces the whole folder."""
    out = check_writable(out)
    if not out.is_dir():
        return out
    entries = {p.name for p in out.iterdir()}
    ours = set(REPORT_FILES)
    try:
        ours |= {Path(f).name for f in json.loads((out / "report.json").read_text()).get("figures", [])}
    except (OSError, ValueError, AttributeError):
        pass
    foreign = sorted(entries - ours)
    if foreign and entries:
        raise FileExistsError(f"--out {out} holds files that are not a study's outputs ({', '.join(foreign[:3])}"
                              f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder")
    return out


def study_output(out: str | Path) -> StagedDir:
    """``with study_output(out) as staged:`` write the figures into ``staged.dir`` (passing
    ``staged.final`` to :func:`safe_figures`) and the report with ``write_report(staged.dir, ...)``;
    at the end of the block the folder replaces ``out`` as one unit, so a report never sits beside
    another run's figures, and an interrupted run leaves the previous outputs whole."""
    return StagedDir(check_study_out(out))


def write_report(out: Path, report: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out``, each atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(out / "report.json", report), atomic_write_text(out / "report.md", markdown)


def safe_figures(report: dict, make: Callable[[], list[Path]],
                 final: Callable[[Path], Path] = Path) -> None:
    """``report["figures"]`` from ``make()`` (each path through ``final``: a staged file's final path);
    an exception becomes ``report["figure_error"]``."""
    report.setdefault("figures", [])
    try:
        report["figures"] += [str(final(p)) for p in make()]
    except Exception as e:  # a figure must never lose the report
        report["figure_error"] = f"{type(e).__name__}: {e}"


def save_and_close(fig: Any, path: Path, formats: Sequence[str]) -> list[Path]:
    """:func:`analyses.figures.save_figure`, then close the figure (studies draw many)."""
    try:
        return save_figure(fig, path, formats)
    finally:
        plt.close(fig)
