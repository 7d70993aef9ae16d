"""The paper's main experiment as one command: the 27 Bhattamishra-suite languages x model variants.

::

    python -m trained_models.suite --budget quick                       # seconds a run (tests)
    python -m trained_models.suite --budget small --jobs 1 --max-total-minutes 40
    python -m trained_models.suite --budget full --jobs 2 --languages parity d12 --models mamba-3l
    python -m trained_models.suite --budget full --print-runs > runs.txt  # one train command per line
    python -m trained_models.suite --budget small --report-only         # re-render results/ only

Every run is one :class:`~trained_models.config.TrainConfig`, built from the argument list of
``python -m trained_models.train`` that ``--print-runs`` prints (so a cluster scheduler runs exactly the
same list): the language's default windows (train on ``train``, early stopping on held-out ``bin0``
strings, test on ``bin0``/``bin1``/``bin2``) and the budget's knobs (:data:`BUDGETS`). Variants
(:data:`VARIANTS`): Mamba with 1, 2 and 3 layers (non-negative gates, as in the paper), Mamba with
signed gates (2 layers; Grazzi et al.'s fix), and our 2-layer Transformer with Bhattamishra et al.'s
best positional variant for the language ("pos mask" = ``--pos-encoding none``, "pos enc" =
``learned``; see :mod:`trained_models.paper_numbers`).

Resumable: a finished run writes ``<runs-dir>/<budget>/<language>/<variant>.json`` atomically and is
skipped from then on; its training directory ``<variant>/`` keeps the checkpoint, so an interrupted
run continues where it stood, and a run finished elsewhere (a ``--print-runs`` line) is collected
without retraining. Pending runs go through joblib (``--jobs``, one torch thread each).

The report covers the whole grid of the budget (27 languages x 5 variants), whatever subset was
trained: ``<out>/suite.csv`` (one row per language x variant) and ``<out>/suite.md`` (per language
class, our numbers beside the paper's and a pattern summary computed from them; "–" for runs not done
yet, and a count of them), both written atomically.
"""
from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import os
import shlex
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from trained_models.io import atomic_write_json, atomic_write_text
from trained_models.paper_numbers import CLASSES, PAPER, SUITE, paper_bins, transformer_pos_encoding

BINS = ("bin0", "bin1", "bin2")


# --------------------------------------------------------------------------- budgets and variants


@dataclass(frozen=True)
class Budget:
    """The knobs a budget sets; everything else is the language's default or ``train``'s."""

    n_train: int  # requested; small windows hold fewer (a^n b^n, Tomita 1): all they hold, 4:1 train:bin0
    n_test: int  # per test bin (bin0's first n_dev strings are the early-stopping dev set)
    n_dev: int
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

    def describe(self) -> str:
        cap = f", at most {self.max_minutes:g} min a run" if self.max_minutes else ""
        cap += f", stopping once dev strict accuracy reaches {self.target:g}" if self.target is not None else ""
        floor = f" and at least {self.min_steps} steps" if self.min_steps else ""
        wait = f" and {self.patience_steps} steps" if self.patience_steps else ""
        return (f"≤{self.n_train:,} training strings (fewer where the window holds fewer), ≤{self.n_test:,} test "
                f"strings per bin, d_model {self.d_model}, {self.epochs} epochs{floor} (batch {self.batch_size}, "
                f"{self.evals_per_epoch} dev evaluation(s) an epoch on {self.n_dev} bin0 strings, early "
                f"stopping after {self.patience} of them{wait} without improvement), AdamW lr {self.lr_mamba:g} (Mamba) / "
                f"{self.lr_transformer:g} (Transformer){cap}")


BUDGETS: dict[str, Budget] = {
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
    language: str
    variant: str
    budget: str
    runs_dir: str

    @property
    def result_path(self) -> Path:
        return Path(self.runs_dir) / self.budget / self.language / f"{self.variant}.json"

    @property
    def train_dir(self) -> Path:
        return Path(self.runs_dir) / self.budget / self.language / self.variant

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
        n_train = _train_size(self.language, b.n_train, b.n_test, b.n_dev)
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
                 "--n-train", str(b.n_train), "--n-dev", str(b.n_dev), "--n-test", str(b.n_test),
                 "--seed", "0", "--threads", "1"]
        if b.max_minutes:
            argv += ["--max-minutes", f"{b.max_minutes:g}"]
        if b.target is not None:
            argv += ["--target", f"{b.target:g}"]
        return argv

    def command(self) -> str:
        argv = self.argv() + ["--out", str(self.train_dir), "--resume", "--no-progress"]
        return "python -m trained_models.train " + " ".join(shlex.quote(a) for a in argv)

    def config(self):
        from trained_models.train import build_parser, config_from_args

        return config_from_args(build_parser().parse_args(self.argv() + ["--out", str(self.train_dir)]))


@functools.lru_cache(maxsize=None)
def _train_size(language: str, n_train: int, n_test: int, n_dev: int) -> int:
    """How many training strings ``train`` will get for these requests (the window may hold fewer)."""
    import languages
    from trained_models.config import TrainConfig
    from trained_models.train import make_data

    cfg = TrainConfig(language=language, n_train=n_train, n_test=n_test, n_dev=n_dev)
    return len(make_data(cfg, languages.get(language))["train"])


def plan(budget: str, runs_dir: str | Path, languages: Optional[Sequence[str]] = None,
         variants: Optional[Sequence[str]] = None) -> list[Run]:
    """The selected runs in training order (:data:`FIRST_VARIANTS` for every language, then the rest)."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; known: {', '.join(BUDGETS)}")
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
    return [Run(lang, v, budget, str(runs_dir)) for group in groups for lang in langs for v in group]


# --------------------------------------------------------------------------- running


def run_one(run: Run, deadline: Optional[float] = None) -> dict[str, Any]:
    """Train and evaluate one run unless its result exists; returns ``{"status": ..., ...}``.

    ``status``: ``skipped`` (result present), ``trained``, ``deferred`` (``deadline`` passed before it
    started) or ``failed`` (the error is printed and nothing is written, so the next invocation retries).
    """
    if run.result_path.exists():
        return {"status": "skipped", "run": asdict(run)}
    if deadline is not None and time.time() > deadline:
        return {"status": "deferred", "run": asdict(run)}
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    try:
        result = _train_run(run)
    except Exception as e:  # one bad run must not stop the suite
        traceback.print_exc()
        print(f"[suite] FAILED {run.language} {run.variant}: {e!r}", file=sys.stderr, flush=True)
        return {"status": "failed", "run": asdict(run), "error": repr(e)}
    atomic_write_json(run.result_path, result)
    s = result["strict"]
    print(f"[suite] {run.budget} {run.language:9s} {run.variant:15s} "
          + " ".join(f"{b} {s[b]:6.2f}" for b in BINS if b in s)
          + f"  ({result['steps']} steps, train {result['train_seconds']:.0f}s, wall {result['wall_seconds']:.0f}s)",
          flush=True)
    return {"status": "trained", "run": asdict(run), "wall_seconds": result["wall_seconds"]}


def _train_run(run: Run) -> dict[str, Any]:
    import languages
    from trained_models.train import train

    cfg = run.config()
    t0 = time.time()
    card = train(cfg, run.train_dir, resume=True, command=run.command(), progress=False)
    stop_reason = card["stop_reason"]
    if not card.get("metrics"):  # stopped by the per-run wall budget: evaluate the best weights so far
        card = train(cfg, run.train_dir, resume=True, finish=True, command=run.command(), progress=False)
        stop_reason = f"{stop_reason} at step {card['steps']} (best weights evaluated)"
    wall = time.time() - t0
    language = languages.get(run.language)
    n_train = _train_size(run.language, cfg.n_train, cfg.n_test, cfg.n_dev)
    metrics = card["metrics"]
    return {
        "language": run.language,
        "class": language.kind,
        "variant": run.variant,
        "budget": run.budget,
        "strict": {b: 100.0 * metrics[b]["strict_accuracy"] for b in BINS if b in metrics},
        "n_test": {b: metrics[b]["n"] for b in BINS if b in metrics},
        "metrics": metrics,
        "n_train": n_train,
        "steps": card["steps"],
        "best_step": card["best_step"],
        "stop_reason": stop_reason,
        "train_seconds": card["train_seconds"],
        "wall_seconds": round(wall, 1),
        "train_command": run.command(),
        "train_config": cfg.to_dict(),
        "machine": card.get("machine"),
    }


def run_suite(runs: Sequence[Run], *, jobs: int = 1, max_total_minutes: Optional[float] = None) -> dict[str, Any]:
    """Run the pending ones of ``runs`` through joblib; returns counts per status and the wall time."""
    from joblib import Parallel, delayed

    t0 = time.time()
    deadline = t0 + 60 * max_total_minutes if max_total_minutes else None
    pending = [r for r in runs if not r.result_path.exists()]
    outcomes = [{"status": "skipped"} for _ in range(len(runs) - len(pending))]
    if pending:
        outcomes += Parallel(n_jobs=jobs)(delayed(run_one)(r, deadline) for r in pending)
    counts = {k: sum(o["status"] == k for o in outcomes) for k in ("trained", "skipped", "deferred", "failed")}
    walls = [o["wall_seconds"] for o in outcomes if o["status"] == "trained"]
    return {**counts, "wall_seconds": round(time.time() - t0, 1), "run_wall_seconds": walls,
            "failures": [o for o in outcomes if o["status"] == "failed"]}


# --------------------------------------------------------------------------- report


def collect(runs_dir: str | Path, budget: str) -> dict[tuple[str, str], dict]:
    """(language, variant) -> saved result, for every finished run of ``budget`` under ``runs_dir``."""
    out = {}
    for run in plan(budget, runs_dir):
        if run.result_path.exists():
            out[(run.language, run.variant)] = json.loads(run.result_path.read_text())
    return out


CSV_FIELDS = ("language", "class", "variant", "budget", "bin0", "bin1", "bin2", "train_seconds", "n_train", "steps",
              "wall_seconds", "stop_reason", "status")


def csv_rows(results: dict[tuple[str, str], dict], budget: str) -> list[dict[str, Any]]:
    import languages

    rows = []
    for lang in SUITE:
        for variant in VARIANTS:
            r = results.get((lang, variant))
            row = {k: "" for k in CSV_FIELDS}
            row.update(language=lang, variant=variant, budget=budget, status="missing",
                       **{"class": languages.get(lang).kind})
            if r is not None:
                row.update({b: f"{r['strict'][b]:.2f}" for b in BINS if b in r["strict"]})
                row.update(train_seconds=r["train_seconds"], n_train=r["n_train"], steps=r["steps"],
                           wall_seconds=r["wall_seconds"], stop_reason=r["stop_reason"], status="done")
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


def _paper_fmt(x: float) -> str:
    return f"{x:g}"


def _cell(bins: Optional[dict[str, float]], fmt=_fmt, n_bins: int = 2) -> str:
    if bins is None:
        return "–"
    return " / ".join(fmt(bins[b]) for b in BINS[:n_bins] if b in bins)


def _mean(xs: list[float]) -> Optional[float]:
    return sum(xs) / len(xs) if xs else None


def render_md(results: dict[tuple[str, str], dict], budget: str, runs_dir: str | Path) -> str:
    import languages

    total = len(SUITE) * len(VARIANTS)
    done = len(results)
    walls = [r["wall_seconds"] for r in results.values()]
    trains = [r["train_seconds"] for r in results.values()]
    lines = [
        "# The Bhattamishra suite: our runs beside the paper's",
        "",
        f"Generated by `python -m trained_models.suite --budget {budget}` from `{Path(runs_dir) / budget}/`. "
        f"Budget **{budget}**: {BUDGETS[budget].describe()}; seed 0, one run per cell, CPU, one torch thread.",
        "",
        "Strict accuracy in % (a string counts only if the allowed-next set is right at every position), "
        "`bin0 / bin1` (counter languages `bin0 / bin1 / bin2`): bin0 = held-out strings of the training "
        "lengths, bin1 and bin2 = longer strings (windows of SPEC §3). Ours: Mamba with 1–3 layers "
        "(non-negative gates, as in the paper), Mamba 2L with signed gates, and our 2-layer Transformer "
        "(TransformerLens) re-run with Bhattamishra et al.'s positional variant. Paper: Sarrof et al.'s Mamba "
        "(`main_expt_results.xlsx`) and Bhattamishra et al.'s Transformer as copied by the paper "
        "(`shared/paper_results.md`; pos mask = no positional encoding, pos enc = with).",
        "",
        f"**Runs done: {done} of {total}; {total - done} missing (shown as –).**"
        + (f" Train time {sum(trains) / 60:.1f} min, wall time {sum(walls) / 60:.1f} min over the done runs "
           f"(per run: median {sorted(walls)[len(walls) // 2]:.0f} s, max {max(walls):.0f} s)." if walls else ""),
    ]
    by_class = {c: [x for x in SUITE if languages.get(x).kind == c] for c in CLASSES}
    titles = {"star-free": "Star-free regular languages", "non-star-free": "Non-star-free regular languages",
              "counter": "Counter languages"}
    paper_variants = [v for v in VARIANTS if VARIANTS[v][1]]
    for cls in CLASSES:
        langs = by_class[cls]
        nb = 3 if cls == "counter" else 2
        lines += ["", f"## {titles[cls]} ({len(langs)})", ""]
        head = ["Language"] + [f"ours {VARIANT_LABELS[v]}" for v in VARIANTS] + \
               [f"paper {VARIANTS[v][1]}" for v in paper_variants]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for lang in langs:
            row = [f"{PAPER[lang]['label']} (`{lang}`)"]
            for v in VARIANTS:
                r = results.get((lang, v))
                row.append(_cell(r["strict"] if r else None, _fmt, nb))
            for v in paper_variants:
                cell = _cell(paper_bins(lang, VARIANTS[v][1]), _paper_fmt, nb)
                if v == "transformer" and PAPER[lang]["transformer_pos"]:
                    cell += f" ({PAPER[lang]['transformer_pos']})"
                row.append(cell)
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", *pattern_lines(cls, langs, results)]
    lines += ["", "Transformer positional encoding (ours): `none` (causal masking only) except "
              + ", ".join(f"`{x}`" for x in SUITE if PAPER[x]["transformer_pos"] == "pos enc")
              + " (`learned`), following the variant the paper's Transformer numbers come from.", ""]
    return "\n".join(lines)


def pattern_lines(cls: str, langs: list[str], results: dict[tuple[str, str], dict]) -> list[str]:
    """The class's summary statistics, ours beside the paper's on the same languages."""
    stats = {"star-free": ["bin1"], "non-star-free": ["bin0", "bin1"], "counter": ["bin0", "bin1"]}[cls]
    what = {"star-free": "Pattern (paper: Mamba 100 / 100 on every star-free language): mean bin1",
            "non-star-free": "Pattern (paper: Mamba fails even in distribution): mean bin0 and bin1",
            "counter": "Pattern (paper: Mamba fits bin0 but does not length-generalize; Transformers do): "
                       "mean bin0 vs bin1"}[cls]
    head = ["mean over the languages done"] + [VARIANT_LABELS[v] for v in VARIANTS]
    out = [f"{what}, ours vs the paper's on the same languages:", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in stats:
        ours_row, paper_row = [f"ours {b}"], [f"paper {b}"]
        for v in VARIANTS:
            done = [x for x in langs if (x, v) in results]
            ours = _mean([results[(x, v)]["strict"][b] for x in done])
            ours_row.append(f"{_fmt(ours)} (n={len(done)})" if done else "–")
            col = VARIANTS[v][1]
            paper_row.append(_fmt(_mean([PAPER[x][col][b] for x in done])) if col and done else "–")
        out += ["| " + " | ".join(ours_row) + " |", "| " + " | ".join(paper_row) + " |"]
    # One sentence per family, all layer counts pooled (the paper's claim is about Mamba as such).
    families = {"Mamba (non-negative, 1–3 layers pooled)": ["mamba-1l", "mamba-2l", "mamba-3l"],
                "Mamba 2L signed": ["mamba-signed-2l"], "Transformer": ["transformer"]}
    parts = []
    for name, vs in families.items():
        cells = [(x, v) for v in vs for x in langs if (x, v) in results]
        if not cells:
            continue
        ours = " / ".join(f"{b} {_fmt(_mean([results[c]['strict'][b] for c in cells]))}" for b in stats)
        cols = [VARIANTS[v][1] for _, v in cells]
        paper = (" (paper, same cells: " + " / ".join(
            f"{b} {_fmt(_mean([PAPER[x][col][b] for (x, _), col in zip(cells, cols)]))}" for b in stats) + ")"
                 ) if all(cols) else ""
        parts.append(f"{name}: {ours} over {len(cells)} runs{paper}")
    if parts:
        out += ["", "Summary: " + "; ".join(parts) + "."]
    return out


def write_report(out: str | Path, runs_dir: str | Path, budget: str) -> dict[str, Path]:
    results = collect(runs_dir, budget)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(results, budget))
    out = Path(out)
    return {"csv": atomic_write_text(out / "suite.csv", buf.getvalue()),
            "md": atomic_write_text(out / "suite.md", render_md(results, budget, runs_dir))}


# --------------------------------------------------------------------------- CLI


def _names(values: Optional[Iterable[str]]) -> Optional[list[str]]:
    if not values:
        return None
    return [x for v in values for x in v.split(",") if x]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m trained_models.suite", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", choices=tuple(BUDGETS), default="small")
    ap.add_argument("--languages", nargs="+", metavar="NAME", help=f"subset (default all 27): {' '.join(SUITE)}")
    ap.add_argument("--models", nargs="+", metavar="VARIANT", help=f"subset (default all): {' '.join(VARIANTS)}")
    ap.add_argument("--jobs", type=int, default=1, help="parallel runs (joblib n_jobs), one torch thread each")
    ap.add_argument("--out", default="results", help="where suite.csv and suite.md go")
    ap.add_argument("--runs-dir", default="runs/suite", help="run results and training directories")
    ap.add_argument("--max-total-minutes", type=float,
                    help="start no new run after this many minutes (the rest stay pending for the next call)")
    ap.add_argument("--print-runs", action="store_true",
                    help="print one `python -m trained_models.train ...` command per selected run and exit")
    ap.add_argument("--report-only", action="store_true", help="train nothing; re-render the report")
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        runs = plan(args.budget, args.runs_dir, _names(args.languages), _names(args.models))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if args.print_runs:
        try:
            for run in runs:
                print(run.command())
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`
            sys.stdout = None
        return 0
    summary = None
    if not args.report_only:
        summary = run_suite(runs, jobs=args.jobs, max_total_minutes=args.max_total_minutes)
    paths = write_report(args.out, args.runs_dir, args.budget)
    if summary is not None:
        walls = summary.pop("run_wall_seconds")
        failures = summary.pop("failures")
        print(json.dumps({**summary, "runs_selected": len(runs),
                          "mean_run_wall_seconds": round(sum(walls) / len(walls), 1) if walls else None,
                          "failed_runs": [f"{f['run']['language']}/{f['run']['variant']}" for f in failures]}))
    print(f"wrote {paths['csv']} and {paths['md']}")
    return 1 if summary and summary["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
