"""The paper's main experiment as one command: the 27 Bhattamishra-suite languages x model variants x seeds.

::

    python -m trained_models.suite --budget quick --seeds 1                 # seconds a run (tests)
    python -m trained_models.suite --budget small --jobs 2 --max-total-minutes 40
    python -m trained_models.suite --budget paper --languages parity d12 --models mamba-3l
    python -m trained_models.suite --budget medium --backend ray --address auto   # an existing Ray cluster
    python -m trained_models.suite --budget full --print-runs > runs.txt    # one train command per line
    python -m trained_models.suite --budget small --report-only             # re-render results/small/ only

A *cell* is one language x variant; it is ``--seeds N`` (default 3) independent *runs* (seeds
0..N-1: the seed draws the training strings, the initial weights and the batch order). Every run is
one :class:`~trained_models.config.TrainConfig`, built from the argument list of
``python -m trained_models.train`` that ``--print-runs`` prints (so a cluster scheduler runs exactly
the same list): the language's default windows, the paper's (:mod:`languages.paper`; train on ``train``, early
stopping on a dev set drawn from the training window disjoint from train and every test bin, test on
``bin0``/``bin1``/``bin2``), the budget's sizes capped by the paper's (Tomita 1/2, (aa)*, a^n b^n:
fewer) and the budget's knobs (:data:`BUDGETS`). Variants (:data:`VARIANTS`): Mamba with 1, 2 and 3 layers (non-negative gates, as
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

The report (:mod:`trained_models.suite_report`) covers the whole grid of the budget (27 languages x
5 variants x seeds), whatever subset was trained, in a folder per budget: ``<out>/<budget>/suite.csv``
(one row per run: per-seed numbers) and ``<out>/<budget>/suite.md`` (per language class, mean and 95%
t-interval over seeds beside the paper's numbers, marked where the paper's lies outside ours), both
written atomically; a folder holding another budget's report is never overwritten.
"""
from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from languages.paper import paper_sizes
from trained_models.paper_numbers import PAPER, SUITE, transformer_pos_encoding

BINS = ("bin0", "bin1", "bin2")


# --------------------------------------------------------------------------- budgets and variants


@dataclass(frozen=True)
class Budget:
    """The knobs a budget sets; everything else is the language's default or ``train``'s."""

    n_train: int  # requested; small windows hold fewer (a^n b^n, Tomita 1): all they hold, 4:1 train:bin0
    n_test: int  # per test bin; train and test sizes are capped by the paper's (languages.paper.paper_sizes)
    n_dev: int  # early-stopping set: training-window strings in no other split
    d_model: int
    epochs: int
    lr_mamba: float
    lr_transformer: float
    patience: int
    evals_per_epoch: int
    batch_size: int = 32
    warmup_steps: int = 100
    min_steps: int = 0  # small windows (a^n b^n: 80 strings) get this many optimiser steps all the same
    patience_steps: int = 0  # early-stopping patience is at least this many steps' worth of evaluations
    max_minutes: Optional[float] = None  # per run, wall clock; the run is then evaluated as it stands
    target: Optional[float] = None  # stop once the dev strict accuracy reaches this (fraction)
    differs: tuple[str, ...] = ()  # where this budget departs from the paper's protocol (table header)

    def describe(self) -> str:
        cap = f", at most {self.max_minutes:g} min a run" if self.max_minutes else ""
        cap += f", stopping once dev strict accuracy reaches {self.target:g}" if self.target is not None else ""
        floor = f" and at least {self.min_steps} steps" if self.min_steps else ""
        wait = f" and {self.patience_steps} steps" if self.patience_steps else ""
        return (f"≤{self.n_train:,} training strings (fewer where the window holds fewer), ≤{self.n_test:,} test "
                f"strings per bin, d_model {self.d_model}, {self.epochs} epochs{floor} (batch {self.batch_size}, "
                f"{self.evals_per_epoch} dev evaluation(s) an epoch on {self.n_dev} held-out training-window strings, early "
                f"stopping after {self.patience} of them{wait} without improvement), AdamW lr {self.lr_mamba:g} (Mamba) / "
                f"{self.lr_transformer:g} (Transformer){cap}")


# The paper's Bhattamishra-suite protocol (lacoco-lab/ssm_expressivity: configs/defaults.yaml,
# configs/train/defaults.yaml, configs/model/mamba.yaml, configs/dataset/*.yaml, train_with_mse.py):
# 10,000 training / 2,000 test strings a bin (1,000 / 50 for the small windows: Tomita 1, a^n b^n),
# batch 32, 50 epochs, d_model (d_channels) 16, d_state 16, d_conv 4, expand 2, AdamW on every
# parameter (SPEC §4: lr 1e-4..1e-3, weight decay 0.1), no scheduler (use_scheduler: False), no early
# stopping (the last epoch is reported), MSE on the allowed-next vectors. The Dyck(8,10) runs add a
# plateau schedule (halve on a dev-loss plateau) and early stopping after 3 epochs.
PAPER_DIFFERS = (
    "objective: a sigmoid per symbol against the allowed-next set (BCE), the paper's is MSE on the same vectors",
    "schedule: 100 warm-up steps, then cosine decay to 0.1x (`train` has no constant or plateau schedule; the "
    "paper's suite script uses none, its Dyck runs a plateau schedule)",
    "stopping: best dev weights, early stopping after 5 epochs without dev improvement or once dev strict "
    "accuracy reaches 100%, and at most 60 min a run on one CPU thread (the paper trains all 50 epochs on a "
    "GPU and reports the last); the best weights so far are evaluated when the cap is hit",
    "Transformer: our 2-layer TransformerLens model at this same budget; the paper's Transformer numbers are "
    "Bhattamishra et al.'s, trained with their own hyperparameters",
    "data: the paper's windows and sizes (languages.paper; results/paper_data.md lists the differences: bin1 of "
    "D_n, abcde, ab_d_bc and zot starts above the training window; lengths uniform within a window), early "
    "stopping on a dev split drawn from the training window, disjoint from train and every test bin",
)

BUDGETS: dict[str, Budget] = {
    # The paper's hyperparameters as far as a CPU allows; where not: PAPER_DIFFERS (in the table header).
    "paper": Budget(n_train=10_000, n_test=2_000, n_dev=500, d_model=16, epochs=50, lr_mamba=1e-3,
                    lr_transformer=1e-3, patience=5, evals_per_epoch=1, batch_size=32, warmup_steps=100,
                    max_minutes=60.0, target=1.0, differs=PAPER_DIFFERS),
    # The paper's protocol scale: 10,000 / 2,000 strings, d_model 32, up to 20 epochs, early stopping.
    "full": Budget(n_train=10_000, n_test=2_000, n_dev=500, d_model=32, epochs=20, lr_mamba=1e-3,
                   lr_transformer=1e-3, patience=4, evals_per_epoch=1, min_steps=2_000, patience_steps=1_000),
    # Between the two: ~4x small's examples, a few minutes a run (for a subset of cells, e.g. one family).
    "medium": Budget(n_train=5_000, n_test=1_000, n_dev=300, d_model=32, epochs=8, lr_mamba=3e-3,
                     lr_transformer=1e-3, patience=6, evals_per_epoch=2, batch_size=32, warmup_steps=100,
                     min_steps=1_000, patience_steps=600, max_minutes=8.0, target=1.0),
    # Fits a 2-core CPU: a few minutes a run.
    "small": Budget(n_train=2_000, n_test=500, n_dev=200, d_model=32, epochs=3, lr_mamba=3e-3,
                    lr_transformer=1e-3, patience=6, evals_per_epoch=2, batch_size=16, warmup_steps=50,
                    min_steps=300, patience_steps=300, max_minutes=4.0, target=1.0),
    # Seconds a run: exercises the machinery only.
    "quick": Budget(n_train=64, n_test=16, n_dev=16, d_model=8, epochs=1, lr_mamba=3e-3, lr_transformer=3e-3,
                    patience=1, evals_per_epoch=1, batch_size=16, warmup_steps=2),
}

# variant name -> (train flags, the paper's column or None). Table order.
VARIANTS: dict[str, tuple[list[str], Optional[str]]] = {
    "mamba-1l": (["--model", "mamba", "--layers", "1", "--gate", "nonnegative"], "Mamba1"),
    "mamba-2l": (["--model", "mamba", "--layers", "2", "--gate", "nonnegative"], "Mamba2"),
    "mamba-3l": (["--model", "mamba", "--layers", "3", "--gate", "nonnegative"], "Mamba3"),
    "mamba-signed-2l": (["--model", "mamba", "--layers", "2", "--gate", "signed"], None),
    "mamba2-2l": (["--model", "mamba2", "--layers", "2", "--gate", "nonnegative"], None),
    "mamba2-2l-signed": (["--model", "mamba2", "--layers", "2", "--gate", "signed"], None),
    "transformer": (["--model", "transformer", "--layers", "2", "--n-heads", "4"], "Transformer"),
}
VARIANT_LABELS = {"mamba-1l": "Mamba 1L", "mamba-2l": "Mamba 2L", "mamba-3l": "Mamba 3L",
                  "mamba-signed-2l": "Mamba 2L signed", "mamba2-2l": "Mamba-2 2L",
                  "mamba2-2l-signed": "Mamba-2 2L signed", "transformer": "Transformer 2L"}
# Training order: these variants for every language first, then the rest.
FIRST_VARIANTS = ("mamba-2l", "transformer")


@dataclass(frozen=True)
class Run:
    """One seed of one cell. Seed 0 keeps the single-seed layout (``<variant>.json``, ``<variant>/``),
    so runs made before ``--seeds`` count as seed 0; seed k > 0 adds ``.seed<k>``."""

    language: str
    variant: str
    budget: str
    runs_dir: str
    seed: int = 0
    device: str = "cpu"  # not part of the run's identity: a run resumes on any device

    @property
    def stem(self) -> str:
        return self.variant if self.seed == 0 else f"{self.variant}.seed{self.seed}"

    @property
    def result_path(self) -> Path:
        return Path(self.runs_dir) / self.budget / self.language / f"{self.stem}.json"

    @property
    def failure_path(self) -> Path:
        """Written when the run raised (its error), removed once it succeeds."""
        return Path(self.runs_dir) / self.budget / self.language / f"{self.stem}.failed.json"

    @property
    def train_dir(self) -> Path:
        return Path(self.runs_dir) / self.budget / self.language / self.stem

    @property
    def name(self) -> str:
        return f"{self.language}/{self.variant}/seed{self.seed}"

    def argv(self) -> list[str]:
        """The ``python -m trained_models.train`` arguments of this run (without ``--out``)."""
        import languages

        b = BUDGETS[self.budget]
        flags, _ = VARIANTS[self.variant]
        family = flags[flags.index("--model") + 1]
        argv = ["--language", self.language, *flags]
        if family == "transformer":
            argv += ["--pos-encoding", transformer_pos_encoding(self.language)]
        lang = languages.get(self.language)
        windows = {"train": lang.default_bins["train"], **{k: v for k, v in lang.default_bins.items() if k != "train"}}
        # Explicit windows: the command is self-contained (and the Transformer's n_ctx covers bin2).
        argv += ["--min-len", str(windows["train"][0]), "--max-len", str(windows["train"][1])]
        argv += [x for k, (lo, hi) in windows.items() if k != "train" for x in ("--test-window", f"{k}={lo}:{hi}")]
        n_train_req, n_test_req = paper_sizes(self.language, b.n_train, b.n_test)
        n_train = _train_size(self.language, n_train_req, n_test_req, b.n_dev)
        steps_per_epoch = -(-n_train // b.batch_size)
        steps = max(b.epochs * steps_per_epoch, b.min_steps)
        # ``train`` evaluates every steps_per_epoch // evals_per_epoch steps; patience counts evaluations,
        # which on a small window come every few steps: express it in steps as well.
        eval_every = max(1, steps_per_epoch // b.evals_per_epoch)
        patience = max(b.patience, -(-b.patience_steps // eval_every))
        argv += ["--d-model", str(b.d_model), "--lr", f"{b.lr_mamba if family == 'mamba' else b.lr_transformer:g}",
                 "--batch-size", str(b.batch_size), "--epochs", str(b.epochs), "--max-steps", str(steps),
                 "--patience", str(patience),
                 "--evals-per-epoch", str(b.evals_per_epoch), "--warmup-steps", str(b.warmup_steps),
                 "--n-train", str(n_train_req), "--n-dev", str(b.n_dev), "--n-test", str(n_test_req),
                 "--seed", str(self.seed), "--threads", "1"]
        if b.max_minutes:
            argv += ["--max-minutes", f"{b.max_minutes:g}"]
        if b.target is not None:
            argv += ["--target", f"{b.target:g}"]
        if self.device != "cpu":
            argv += ["--device", self.device]
        return argv

    def identity(self) -> dict[str, Any]:
        """What makes a saved result this run's: its training arguments (the device aside: a run resumes on
        any device) and a fingerprint of the language's data (:func:`data_fingerprint`), so a result made
        before a sampler, a target or a window changed is never collected as this run's."""
        argv = self.argv()
        if "--device" in argv:
            i = argv.index("--device")
            del argv[i:i + 2]
        return {"argv": argv, "data": data_fingerprint(self.language)}

    def saved(self) -> Optional[dict[str, Any]]:
        """The saved result if there is one (whatever made it)."""
        return json.loads(self.result_path.read_text()) if self.result_path.exists() else None

    def status(self) -> str:
        """``done`` (a result made by this run as it is defined now), ``stale`` (a result made by other
        arguments or other data: not collected, and retrained after moving it aside), or ``pending``."""
        saved = self.saved()
        if saved is None:
            return "pending"
        return "done" if saved.get("identity") == self.identity() else "stale"

    def archive_stale(self) -> Path:
        """Move a stale result and its training folder to ``<language>/stale/<stem>-<time>/`` (never
        deleted: the old numbers stay readable) and return that folder."""
        import time

        dest = self.result_path.parent / "stale" / f"{self.stem}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        dest.mkdir(parents=True, exist_ok=False)
        for p in (self.result_path, self.failure_path, self.train_dir):
            if p.exists():
                p.rename(dest / p.name)
        return dest

    def command(self) -> str:
        argv = self.argv() + ["--out", str(self.train_dir), "--resume", "--no-progress"]
        return "python -m trained_models.train " + " ".join(shlex.quote(a) for a in argv)

    def config(self):
        from trained_models.train import build_parser, config_from_args

        return config_from_args(build_parser().parse_args(self.argv() + ["--out", str(self.train_dir)]))


@functools.lru_cache(maxsize=None)
def data_fingerprint(language: str) -> str:
    """sha256 (16 hex digits) of 32 strings the language samples from its training window with a fixed
    seed, with their per-position targets: it changes whenever the sampler, the targets or the training
    window change, which the training arguments alone would not show (Tomita 3's definition changed
    while its name and windows stayed)."""
    import hashlib

    import languages

    lang = languages.get(language)
    lo, hi = lang.default_bins["train"]
    h = hashlib.sha256(f"{language} {lo} {hi}".encode())
    for s in lang.sample(32, lo, hi, seed=12345):
        h.update(s.encode() + b"\x00")
        h.update(repr([sorted(a) for a in lang.allowed_next(s)]).encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _train_size(language: str, n_train: int, n_test: int, n_dev: int) -> int:
    """How many training strings ``train`` will get for these requests (the window may hold fewer)."""
    import languages
    from trained_models.config import TrainConfig
    from trained_models.config import make_data

    cfg = TrainConfig(language=language, n_train=n_train, n_test=n_test, n_dev=n_dev)
    return len(make_data(cfg, languages.get(language))["train"])


def plan(budget: str, runs_dir: str | Path, languages: Optional[Sequence[str]] = None,
         variants: Optional[Sequence[str]] = None, seeds: int = 1, device: str = "cpu") -> list[Run]:
    """The selected runs in training order: seed by seed (every cell gets its seed 0 before any cell
    its seed 1), and within a seed :data:`FIRST_VARIANTS` for every language, then the rest."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; known: {', '.join(BUDGETS)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    langs = list(languages) if languages else list(SUITE)
    vars_ = list(variants) if variants else list(VARIANTS)
    bad = [x for x in langs if x not in PAPER]
    if bad:
        raise ValueError(f"not suite languages: {bad}; known: {', '.join(SUITE)}")
    bad = [v for v in vars_ if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variants: {bad}; known: {', '.join(VARIANTS)}")
    groups = [[v for v in VARIANTS if v in vars_ and v in FIRST_VARIANTS],
              [v for v in VARIANTS if v in vars_ and v not in FIRST_VARIANTS]]
    return [Run(lang, v, budget, str(runs_dir), seed, device)
            for seed in range(seeds) for group in groups for lang in langs for v in group]


# --------------------------------------------------------------------------- CLI


def _train_has_device() -> bool:
    from trained_models.train import build_parser as train_parser

    return any("--device" in a.option_strings for a in train_parser()._actions)


def _names(values: Optional[Iterable[str]]) -> Optional[list[str]]:
    if not values:
        return None
    return [x for v in values for x in v.split(",") if x]


def build_parser() -> argparse.ArgumentParser:
    from languages import cli

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
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    from languages import cli

    return cli.cli("python -m trained_models.suite")(_main)(argv)


def _main(argv: Optional[list[str]] = None) -> int:
    from trained_models.executors import run_suite
    from trained_models.suite_report import ReportConflict, check_report_target, write_report

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
                    args.device)
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
        check_report_target(args.out, args.budget)
    except ReportConflict as e:
        ap.error(str(e))
    summary = None
    if not args.report_only:
        try:
            summary = run_suite(runs, jobs=args.jobs, max_total_minutes=args.max_total_minutes,
                                backend=args.backend, address=args.address, device=args.device)
        except RuntimeError as e:  # Ray missing or unreachable
            ap.error(f"argument --backend: {e}")
    paths = write_report(args.out, args.runs_dir, args.budget, seeds=args.seeds)
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
