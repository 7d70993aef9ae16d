"""The suite's plan: budgets, model variants and the runs they make (:func:`plan`), one :class:`Run` a
seed of a language x variant cell. :mod:`trained_models.suite` is its command line; the executors
(:mod:`trained_models.executors`) train the runs and :mod:`trained_models.suite_report` reports them.
"""
from __future__ import annotations

import functools
import hashlib
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import languages as _languages
from languages.io import atomic_write_json
from languages.paper import STORED_SPLITS, paper_sizes, stored_commit, stored_fingerprint, stored_split
from trained_models.config import BUDGET_STOPS, TrainConfig, make_data
from trained_models.paper_numbers import PAPER, SUITE, transformer_pos_encoding
from trained_models.run_folder import CONFIG
from trained_models.train import build_parser, config_from_args
from trained_models.training import eval_interval, evaluation_steps, patience_span

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
    patience: Optional[int]  # dev evaluations without improvement that end a run; None: no early stopping
    evals_per_epoch: int
    batch_size: int = 32
    warmup_steps: int = 100
    min_steps: int = 0  # small windows (a^n b^n: 80 strings) get this many optimiser steps all the same
    patience_steps: int = 0  # early-stopping patience is at least this many steps' worth of evaluations
    # Per run, in CPU minutes of the training process (not wall clock: a run's result must not depend on
    # what else the machine runs); the run is then evaluated as it stands.
    max_minutes: Optional[float] = None
    target: Optional[float] = None  # stop once the dev strict accuracy reaches this (fraction)
    differs: tuple[str, ...] = ()  # where this budget departs from the paper's protocol (table header)

    def steps(self, n_train: int) -> tuple[int, int]:
        """A run with ``n_train`` training strings: (steps an epoch, the step budget: ``epochs`` epochs, at least
        ``min_steps``)."""
        per_epoch = -(-n_train // self.batch_size)
        return per_epoch, max(self.epochs * per_epoch, self.min_steps)

    def evaluations(self, n_train: int) -> int:
        """How many dev evaluations a run with ``n_train`` training strings makes if it trains its whole step
        budget (:func:`trained_models.training.evaluation_steps`)."""
        per_epoch, budget = self.steps(n_train)
        return max(1, len(evaluation_steps(per_epoch, self.evals_per_epoch, budget)))

    def patience_evals(self, n_train: int) -> int:
        """Early stopping's patience in dev evaluations for a run with ``n_train`` training strings: ``patience``,
        raised so that as many regular evaluation intervals cover ``patience_steps`` (on a small window the
        evaluations come every few steps). With ``patience=None`` (no early stopping): every evaluation the step
        budget holds, a count no run can spend, since its first evaluation always improves on none."""
        per_epoch, _ = self.steps(n_train)
        if self.patience is None:
            return self.evaluations(n_train)
        return max(self.patience, -(-self.patience_steps // eval_interval(per_epoch, self.evals_per_epoch)))

    def describe(self) -> str:
        def n(k: int, what: str) -> str:
            return f"{k:,} {what}{'' if k == 1 else 's'}"

        cap = f", at most {self.max_minutes:g} CPU minutes a run" if self.max_minutes else ""
        cap += f", stopping once dev strict accuracy reaches {self.target:g}" if self.target is not None else ""
        per_epoch, budget = self.steps(self.n_train)
        every = eval_interval(per_epoch, self.evals_per_epoch)
        steps = (f"{n(self.epochs, 'epoch')} or {n(self.min_steps, 'optimiser step')}, whichever is more"
                 if self.min_steps else n(self.epochs, "epoch"))
        when = ("at each epoch's end" if self.evals_per_epoch == 1 else
                f"{self.evals_per_epoch}× an epoch and at each epoch's last step")
        patience = self.patience_evals(self.n_train)
        if self.patience is None:
            stopping = (f"no early stopping: a run trains its whole step budget (`--patience` is the {patience} "
                        f"evaluations a run of {self.n_train:,} strings makes, which no run can spend) and keeps the "
                        f"weights of its best dev evaluation")
        else:
            rule = (f"N evaluations without a strict improvement, a tie counting as none (N: {self.patience}, raised "
                    f"to cover {self.patience_steps} steps at the regular interval; {patience} for a run of "
                    f"{self.n_train:,} strings)" if self.patience_steps else
                    f"{n(patience, 'evaluation')} without a strict improvement, a tie counting as none")
            span = patience_span(per_epoch, self.evals_per_epoch, patience, budget)
            if span:
                lo, hi = span
                rule += (f"; a run of {self.n_train:,} strings has {per_epoch} steps an epoch, evaluates every "
                         f"{every} and stops {f'{lo}–{hi}' if lo != hi else lo} steps after its last improvement")
            stopping = f"early stopping after {rule}"
        return (f"≤{self.n_train:,} training strings (fewer where the window holds fewer), ≤{self.n_test:,} test "
                f"strings per bin, d_model {self.d_model}, {steps} (batch {self.batch_size}; dev strict accuracy on "
                f"{self.n_dev} held-out training-window strings {when}; {stopping}), AdamW lr "
                f"{self.lr_mamba:g} (Mamba) / {self.lr_transformer:g} (Transformer){cap}")


# The paper's Bhattamishra-suite protocol (lacoco-lab/ssm_expressivity: configs/defaults.yaml,
# configs/train/defaults.yaml, configs/model/mamba.yaml, configs/dataset/*.yaml, train_with_mse.py):
# 10,000 training / 2,000 test strings a bin (1,000 / 50 for the small windows: Tomita 1, a^n b^n),
# batch 32, 50 epochs, d_model (d_channels) 16, d_state 16, d_conv 4, expand 2, AdamW on every
# parameter (the paper's settings: lr 1e-4..1e-3, weight decay 0.1), no scheduler (use_scheduler: False), no early
# stopping (the last epoch is reported), MSE on the allowed-next vectors. The Dyck(8,10) runs add a
# plateau schedule (halve on a dev-loss plateau) and early stopping after 3 epochs.
PAPER_DIFFERS = (
    "objective: a sigmoid per symbol against the allowed-next set (BCE), the paper's is MSE on the same vectors",
    "schedule: 100 warm-up steps, then cosine decay to 0.1x (`train` has no constant or plateau schedule; the "
    "paper's suite script uses none, its Dyck runs a plateau schedule)",
    "stopping: every run trains all 50 epochs as in the paper, but stops once dev strict accuracy reaches 100% "
    "and at most 60 CPU minutes a run on one thread (the paper trains on a GPU), and is evaluated with the "
    "weights of its best dev evaluation (the paper reports the last epoch's)",
    "hyperparameters: one configuration (d_model 16, lr 1e-3, 50 epochs); the paper reports the best of a sweep "
    "per language (experiments/mamba_sweeps/*.yaml: d_model 16, 64, 128; lr 1e-4..1e-3; up to 100 epochs)",
    "Transformer: our 2-layer TransformerLens model at this same budget; the paper's Transformer numbers are "
    "Bhattamishra et al.'s, trained with their own hyperparameters",
    "data: the paper's windows and sizes (languages.paper; results/paper_data.md lists the differences: bin1 of "
    "D_n, abcde, ab_d_bc and zot starts above the training window; lengths uniform within a window), early "
    "stopping on a dev split drawn from the training window, disjoint from train and every test bin",
)

BUDGETS: dict[str, Budget] = {
    # The paper's hyperparameters as far as a CPU allows; where not: PAPER_DIFFERS (in the table header).
    # No early stopping, as in the paper: a 5-epoch patience ended D_12's 2-layer run on the paper's strings at
    # epoch 13 on a noisy dev curve (62.1 / 28.0); all 50 epochs give 89.9 / 58.9 (results/medium/deviations.md).
    "paper": Budget(n_train=10_000, n_test=2_000, n_dev=500, d_model=16, epochs=50, lr_mamba=1e-3,
                    lr_transformer=1e-3, patience=None, evals_per_epoch=1, batch_size=32, warmup_steps=100,
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
    # A clone or mirror of the paper's repository: train, stop early and test on its stored strings
    # (``train --paper-data``) instead of our sampler's. Its path is not part of the run's identity (the stored
    # data's fingerprint is); such runs live in their own group folder, ``<budget>-paper-data``.
    paper_data: Optional[str] = None

    @property
    def group(self) -> str:
        """The folder under ``runs_dir`` (and the report's under ``--out``): the budget, plus the data source."""
        return group_name(self.budget, self.paper_data is not None)

    @property
    def stem(self) -> str:
        return self.variant if self.seed == 0 else f"{self.variant}.seed{self.seed}"

    @property
    def result_path(self) -> Path:
        return Path(self.runs_dir) / self.group / self.language / f"{self.stem}.json"

    @property
    def failure_path(self) -> Path:
        """Written when the run raised (its error), removed once it succeeds."""
        return Path(self.runs_dir) / self.group / self.language / f"{self.stem}.failed.json"

    @property
    def train_dir(self) -> Path:
        return Path(self.runs_dir) / self.group / self.language / self.stem

    @property
    def name(self) -> str:
        return f"{self.language}/{self.variant}/seed{self.seed}"

    def argv(self) -> list[str]:
        """The ``python -m trained_models.train`` arguments of this run (without ``--out``)."""
        b = BUDGETS[self.budget]
        flags, _ = VARIANTS[self.variant]
        family = flags[flags.index("--model") + 1]
        argv = ["--language", self.language, *flags]
        if family == "transformer":
            argv += ["--pos-encoding", transformer_pos_encoding(self.language)]
        lang = _languages.get(self.language)
        windows = {"train": lang.default_bins["train"], **{k: v for k, v in lang.default_bins.items() if k != "train"}}
        # Explicit windows: the command is self-contained (and the Transformer's n_ctx covers bin2).
        argv += ["--min-len", str(windows["train"][0]), "--max-len", str(windows["train"][1])]
        argv += [x for k, (lo, hi) in windows.items() if k != "train" for x in ("--test-window", f"{k}={lo}:{hi}")]
        n_train_req, n_test_req = paper_sizes(self.language, b.n_train, b.n_test)
        n_train = self.train_size()
        _, steps = b.steps(n_train)
        patience = b.patience_evals(n_train)
        argv += ["--d-model", str(b.d_model), "--lr", f"{b.lr_transformer if family == 'transformer' else b.lr_mamba:g}",
                 "--batch-size", str(b.batch_size), "--epochs", str(b.epochs),
                 # at least 1: a window that leaves no training strings gets train's own error, not argparse's
                 "--max-steps", str(max(1, steps)),
                 "--patience", str(patience),
                 "--evals-per-epoch", str(b.evals_per_epoch), "--warmup-steps", str(b.warmup_steps),
                 "--n-train", str(n_train_req), "--n-dev", str(b.n_dev), "--n-test", str(n_test_req),
                 "--seed", str(self.seed), "--threads", "1"]
        if b.max_minutes:
            argv += ["--max-cpu-minutes", f"{b.max_minutes:g}"]
        if b.target is not None:
            argv += ["--target", f"{b.target:g}"]
        if self.paper_data is not None:
            argv += ["--paper-data", self.paper_data]
        if self.device != "cpu":
            argv += ["--device", self.device]
        return argv

    def train_size(self) -> int:
        """How many training strings the run gets (the budget's request, capped by the paper's size and by what
        the window, or the stored training file, holds)."""
        b = BUDGETS[self.budget]
        n_train_req, n_test_req = paper_sizes(self.language, b.n_train, b.n_test)
        # keyed by the stored data's digest as well: a new commit of the clone may hold another training file
        stored = None if self.paper_data is None else paper_data_fingerprint(self.paper_data, self.language)
        return _train_size(self.language, n_train_req, n_test_req, b.n_dev, self.paper_data, stored)

    def identity(self) -> dict[str, Any]:
        """What makes a saved result this run's: its training arguments (the device aside: a run resumes on
        any device) and a fingerprint of the language's data (:func:`data_fingerprint`), so a result made
        before a sampler, a target or a window changed is never collected as this run's. On the paper's stored
        strings: the arguments with the repository's path replaced by :data:`PAPER_REPO` and the fingerprint of the
        stored strings and our targets on them (:func:`paper_data_fingerprint`), so a run resumes from any clone of
        the same data and a result made on other stored data or targets is never collected."""
        argv = self.argv()
        if "--device" in argv:
            i = argv.index("--device")
            del argv[i:i + 2]
        if self.paper_data is None:
            return {"argv": argv, "data": data_fingerprint(self.language)}
        argv[argv.index("--paper-data") + 1] = PAPER_REPO
        return {"argv": argv, "data": "paper:" + paper_data_fingerprint(self.paper_data, self.language)}

    def saved(self) -> Optional[dict[str, Any]]:
        """The saved result if there is one (whatever made it)."""
        return json.loads(self.result_path.read_text()) if self.result_path.exists() else None

    @property
    def begun_path(self) -> Path:
        """The identity of the run that began the training folder (:meth:`begin`)."""
        return self.train_dir / "suite_identity.json"

    def begin(self) -> None:
        """Before training: record this run's identity in a training folder it starts (a folder begun before
        these records existed gets none), and point a checkpoint begun from another clone of the same stored
        strings (the same recorded identity, which holds no path) at this clone, so that ``train --resume``
        accepts it."""
        config = self.train_dir / CONFIG
        if not config.exists():
            if not self.begun_path.exists():
                atomic_write_json(self.begun_path, self.identity())
            return
        saved = json.loads(config.read_text())
        if (self.paper_data is not None and saved.get("paper_data") not in (None, self.paper_data)
                and self.begun_path.exists() and _same_run(json.loads(self.begun_path.read_text()), self.identity())):
            atomic_write_json(config, {**saved, "paper_data": self.paper_data})

    def status(self) -> str:
        """``done`` (a result made by this run as it is defined now), ``stale`` (a result made by other
        arguments or other data: not collected, and retrained after moving it aside; likewise a training folder
        :meth:`begin` recorded for other arguments or data), or ``pending``."""
        saved = self.saved()
        identity = self.identity()
        if saved is None:
            begun = json.loads(self.begun_path.read_text()) if self.begun_path.exists() else None
            return "stale" if begun is not None and not _same_run(begun, identity) else "pending"
        if saved.get("identity") == identity:
            return "done"
        # A time cap the run never reached did not shape its result: a result made under another cap (e.g. the
        # wall-clock --max-minutes the suite used before --max-cpu-minutes) is this run's if it stopped for
        # another reason.
        old = saved.get("identity") or {}
        if _same_run(old, identity) and not str(saved.get("stop_reason", "")).startswith(BUDGET_STOPS):
            return "done"
        return "stale"

    def archive_stale(self) -> Path:
        """Move a stale result and its training folder to ``<language>/stale/<stem>-<time>/`` (never
        deleted: the old numbers stay readable) and return that folder."""
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
        return config_from_args(build_parser().parse_args(self.argv() + ["--out", str(self.train_dir)]))


TIME_CAPS = ("--max-minutes", "--max-cpu-minutes")
PAPER_REPO = "<paper repository>"  # stands for the --paper-data path in a run's identity
PAPER_DATA_SUFFIX = "-paper-data"


def group_name(budget: str, paper_data: bool) -> str:
    """The runs' (and the report's) folder name: ``medium``, or ``medium-paper-data`` on the paper's stored strings."""
    return budget + (PAPER_DATA_SUFFIX if paper_data else "")


def _same_run(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether two identities name the same run but for their time caps (a resumed run may change its cap)."""
    return old.get("data") == new["data"] and _without_caps(old.get("argv", [])) == _without_caps(new["argv"])


def _without_caps(argv: Sequence[str]) -> list[str]:
    """``argv`` without its time caps (each flag and its value)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in TIME_CAPS:
            skip = True
        else:
            out.append(a)
    return out


@functools.lru_cache(maxsize=None)
def data_fingerprint(language: str) -> str:
    """sha256 (16 hex digits) of 32 strings the language samples from its training window with a fixed
    seed, with their per-position targets: it changes whenever the sampler, the targets or the training
    window change, which the training arguments alone would not show (Tomita 3's definition changed
    while its name and windows stayed)."""
    lang = _languages.get(language)
    lo, hi = lang.default_bins["train"]
    h = hashlib.sha256(f"{language} {lo} {hi}".encode())
    for s in lang.sample(32, lo, hi, seed=12345):
        h.update(s.encode() + b"\x00")
        h.update(repr([sorted(a) for a in lang.allowed_next(s)]).encode())
    return h.hexdigest()[:16]


def paper_data_fingerprint(repo: str | Path, language: str) -> str:
    """sha256 (16 hex digits) of ``language``'s stored strings (:func:`languages.paper.stored_fingerprint`) and of
    our per-position targets on the first 16 strings of each stored split: it changes when a stored string
    changes and when our targets do (as :func:`data_fingerprint` does for the sampler's strings). Read once per
    (repository, commit, language)."""
    return _paper_data_fingerprint(str(Path(repo).resolve()), stored_commit(repo), language)


@functools.lru_cache(maxsize=None)
def _paper_data_fingerprint(repo: str, commit: str, language: str) -> str:
    lang = _languages.get(language)
    h = hashlib.sha256(stored_fingerprint(repo, language).encode())
    for split in STORED_SPLITS:
        for s in stored_split(repo, language, split, missing_ok=split != "train")[:16]:
            h.update(s.encode() + b"\x00")
            h.update(repr([sorted(a) for a in lang.allowed_next(s)]).encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _train_size(language: str, n_train: int, n_test: int, n_dev: int, paper_data: Optional[str] = None,
                stored: Optional[str] = None) -> int:
    """How many training strings ``train`` will get for these requests (the window, or the paper's stored
    training file, may hold fewer; ``stored``: the stored data's fingerprint, part of the cache key only)."""
    cfg = TrainConfig(language=language, n_train=n_train, n_test=n_test, n_dev=n_dev, paper_data=paper_data)
    return len(make_data(cfg, _languages.get(language))["train"])


def plan(budget: str, runs_dir: str | Path, languages: Optional[Sequence[str]] = None,
         variants: Optional[Sequence[str]] = None, seeds: int = 1, device: str = "cpu",
         paper_data: Optional[str | Path] = None) -> list[Run]:
    """The selected runs in training order: seed by seed (every cell gets its seed 0 before any cell
    its seed 1), and within a seed :data:`FIRST_VARIANTS` for every language, then the rest.
    ``paper_data``: the runs train and test on the paper's stored strings (:attr:`Run.paper_data`)."""
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
    repo = None if paper_data is None else str(Path(paper_data).resolve())
    if repo is not None:  # before any run: every language's stored data must be there (and be members)
        for x in langs:
            try:
                paper_data_fingerprint(repo, x)
            except FileNotFoundError as e:
                raise ValueError(f"--paper-data {paper_data}: not the paper's repository, or not all of it: {e}") from None
    return [Run(lang, v, budget, str(runs_dir), seed, device, repo)
            for seed in range(seeds) for group in groups for lang in langs for v in group]
