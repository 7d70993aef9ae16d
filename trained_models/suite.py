"""The paper's main experiment as one command: the 27 Bhattamishra-suite languages x model variants x seeds.

::

    python -m trained_models.suite --budget quick --seeds 1                 # seconds a run (tests)
    python -m trained_models.suite --budget small --jobs 2 --max-total-minutes 40
    python -m trained_models.suite --budget paper --languages parity d12 --models mamba-3l
    python -m trained_models.suite --budget medium --backend ray --address auto   # an existing Ray cluster
    python -m trained_models.suite --budget full --print-runs > runs.txt    # one train command per line
    python -m trained_models.suite --budget small --report-only             # re-render results/small/ only
    python -m trained_models.suite --budget medium --languages d4 tomita3 --paper-data PATH_TO_ssm_expressivity

A *cell* is one language x variant; it is ``--seeds N`` (default 3) independent *runs* (seeds
0..N-1: the seed draws the training strings, the initial weights and the batch order). Every run is
one :class:`~trained_models.config.TrainConfig`, built from the argument list of
``python -m trained_models.train`` that ``--print-runs`` prints (so a cluster scheduler runs exactly
the same list): the language's default windows, the paper's (:mod:`languages.paper`; train on ``train``, early
stopping on a dev set drawn from the training window disjoint from train and every test bin, test on
``bin0``/``bin1``/``bin2``), the budget's sizes capped by the paper's (Tomita 1/2, (aa)*, a^n b^n:
fewer) and the budget's knobs (:data:`~trained_models.suite_plan.BUDGETS`; the plan lives in
:mod:`trained_models.suite_plan`). Variants (:data:`~trained_models.suite_plan.VARIANTS`): Mamba with 1, 2 and 3 layers (non-negative gates, as
in the paper), Mamba with signed gates (2 layers; Grazzi et al.'s fix), and our 2-layer Transformer
with Bhattamishra et al.'s best positional variant for the language ("pos mask" =
``--pos-encoding none``, "pos enc" = ``learned``; see :mod:`trained_models.paper_numbers`).

Resumable: a finished run writes ``<runs-dir>/<budget>/<language>/<variant>.json`` (seed 0; seed k
writes ``<variant>.seed<k>.json``) atomically and is skipped from then on; its training directory
(``<variant>/``, ``<variant>.seed<k>/``) keeps the checkpoint, so an interrupted run continues where it
stood, and a run finished elsewhere (a ``--print-runs`` line) is collected without retraining. A run
that raises writes ``<variant>[.seed<k>].failed.json`` with its error (the others go on; the next call
retries it). Pending runs go through an executor (:mod:`trained_models.executors`: joblib on this
machine, ``--jobs`` processes, or Ray with ``--backend ray``), one torch thread each; the run
directories are the only state the executors share.

``--paper-data REPO`` (a clone or mirror of the paper's repository ``lacoco-lab/ssm_expressivity``) runs the
same plan on the paper's *stored* strings instead of our sampler's (``train --paper-data``): its runs live in
``<runs-dir>/<budget>-paper-data/`` and its report in ``<out>/<budget>-paper-data/``, each cell set beside the
same cell on our strings. Such a run is keyed by a digest of the stored strings, not by the clone's path, so it
resumes from any clone of the same data and a result made on other stored data is never collected.

The report (:mod:`trained_models.suite_report`) covers the whole grid of the budget (27 languages x
5 variants x seeds), whatever subset was trained, in a folder per budget: ``<out>/<budget>/suite.csv``
(one row per run: per-seed numbers) and ``<out>/<budget>/suite.md`` (per language class, mean and 95%
t-interval over seeds beside the paper's numbers, marked where the paper's lies outside ours), both
written atomically; a folder holding another budget's report is never overwritten.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, Optional

from languages import cli
from trained_models.executors import run_suite
from trained_models.paper_numbers import SUITE
from trained_models.suite_fit import update_fits
from trained_models.suite_patterns import departures
from trained_models.suite_plan import BUDGETS, VARIANTS, Run, plan
from trained_models.suite_report import ReportConflict, check_report_target, collect, report_dir, write_report
from trained_models.train import build_parser as train_parser

# --------------------------------------------------------------------------- CLI


def _train_has_device() -> bool:
    return any("--device" in a.option_strings for a in train_parser()._actions)


def _names(values: Optional[Iterable[str]]) -> Optional[list[str]]:
    if not values:
        return None
    return [x for v in values for x in v.split(",") if x]


def build_parser() -> argparse.ArgumentParser:
    ap = cli.ArgumentParser(prog="python -m trained_models.suite", description=__doc__.split("\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", choices=tuple(BUDGETS), default="small")
    ap.add_argument("--seeds", type=cli.positive_int, default=3,
                    help="independent runs per cell, seeds 0..N-1 (default 3: the published table)")
    ap.add_argument("--languages", nargs="+", metavar="NAME", help=f"subset (default all 27): {' '.join(SUITE)}")
    ap.add_argument("--models", nargs="+", metavar="VARIANT", help=f"subset (default all): {' '.join(VARIANTS)}")
    ap.add_argument("--jobs", type=cli.positive_int, default=1,
                    help="parallel runs on this machine (joblib processes, or the CPUs of the local Ray "
                         "--backend ray starts), one torch thread each")
    ap.add_argument("--backend", choices=("joblib", "ray"), default="joblib",
                    help="joblib (default): processes on this machine; ray: one Ray task per run")
    ap.add_argument("--address", metavar="ADDR",
                    help="with --backend ray: an existing cluster ('auto', or host:port); default: start a local Ray")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="where each run trains (cuda needs a --device option in trained_models.train, which "
                         "trains on the CPU today); with Ray, cuda asks one GPU a run where the cluster has GPUs")
    ap.add_argument("--out", default="results", type=cli.out_dir,
                    help="report root: the report goes to OUT/<budget>/suite.{csv,md} (default results)")
    ap.add_argument("--runs-dir", default="runs/suite", type=cli.out_dir, help="run results and training directories")
    ap.add_argument("--max-total-minutes", type=cli.positive_float,
                    help="start no new run after this many minutes (the rest stay pending for the next call)")
    ap.add_argument("--print-runs", action="store_true",
                    help="print one `python -m trained_models.train ...` command per selected run and exit")
    ap.add_argument("--report-only", action="store_true", help="train nothing; re-render the report")
    ap.add_argument("--fit-check", action="store_true",
                    help="before the report: score every finished seed of every cell that departs from the paper's "
                         "pattern on its own training strings (kept in <report folder>/fit.csv; the report shows "
                         "them); needs the runs' training folders")
    ap.add_argument("--paper-data", metavar="REPO",
                    help="train, stop early and test on the paper's stored strings (REPO: a clone or mirror of "
                         "lacoco-lab/ssm_expressivity); runs and report go to <budget>-paper-data/")
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    return cli.cli("python -m trained_models.suite")(_main)(argv)


def _main(argv: Optional[list[str]] = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.address and args.backend != "ray":
        ap.error(f"argument --address: only with --backend ray (got --backend {args.backend})")
    if args.device != "cpu" and not _train_has_device():
        ap.error(f"argument --device: {args.device!r} needs a --device option in trained_models.train, "
                 "which trains on the CPU only")
    if args.address:  # a cluster's workers need not share this directory: absolute run paths
        args.runs_dir = str(Path(args.runs_dir).resolve())
    try:
        runs = plan(args.budget, args.runs_dir, _names(args.languages), _names(args.models), args.seeds,
                    args.device, args.paper_data)
    except ValueError as e:
        ap.error(str(e))
    if args.print_runs:
        try:
            for run in runs:
                print(run.command())
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`
            sys.stdout = None
        return 0
    try:  # before any training: a report folder of another budget is never overwritten
        check_report_target(args.out, args.budget, args.paper_data is not None)
    except ReportConflict as e:
        ap.error(str(e))
    summary = None
    if not args.report_only:
        try:
            summary = run_suite(runs, jobs=args.jobs, max_total_minutes=args.max_total_minutes,
                                backend=args.backend, address=args.address, device=args.device)
        except RuntimeError as e:  # Ray missing or unreachable
            ap.error(f"argument --backend: {e}")
    if args.fit_check:  # every finished seed of a departing cell, those beyond --seeds too (the report shows them)
        cells = collect(args.runs_dir, args.budget, args.seeds, args.paper_data)
        chosen = {(r.language, r.variant) for r in runs}
        update_fits([Run(lang, v, args.budget, args.runs_dir, seed, paper_data=args.paper_data)
                     for lang, _, v, _, _ in departures(cells) if (lang, v) in chosen for seed in cells[(lang, v)].runs],
                    report_dir(args.out, args.budget, args.paper_data is not None))
    paths = write_report(args.out, args.runs_dir, args.budget, seeds=args.seeds, paper_data=args.paper_data)
    if summary is not None:
        walls = summary.pop("run_wall_seconds")
        failures = summary.pop("failures")
        print(json.dumps({**summary, "runs_selected": len(runs),
                          "mean_run_wall_seconds": round(sum(walls) / len(walls), 1) if walls else None,
                          "failed_runs": {f["run"]: f["error"] for f in failures}}))
    print(f"wrote {paths['csv']} and {paths['md']}")
    return 1 if summary and summary["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
