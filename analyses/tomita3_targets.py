"""Tomita 3 in the suite: the targets a run is scored on, and where in a string a non-negative Mamba fails.

Run: ``python -m analyses.tomita3_targets --paper-data REPO`` (after the suite's Tomita 3 runs and
``runs/paper-targets/run.sh``; ``REPO``: a clone or mirror of ``lacoco-lab/ssm_expressivity``; ``--help`` for the
folders). Writes ``results/medium/tomita3.md``.

Tomita 3 is not star-free (the word ``00`` swaps two live states of its minimal DFA), so the paper's
theory says no Mamba with non-negative gates solves it at every length, and the paper's Mamba scored
26-61 / 12-29 (bin0 / bin1). Ours scores far higher on the same windows. Three measurements locate the gap:

* **Targets.** The original repository scores Tomita 3 on wrong targets (it forbids a ``0`` right after an odd
  1-block, although ``100`` is a member: :mod:`languages.regular`). Every model here is scored on both target
  sets, and the suite's training command is also run with ``--targets paper``.
* **Parity span.** The correct targets depend on a block's parity only where a 1-block is immediately
  followed by 0s: at each of those 0s, whether ``1`` and END may follow depends on the 1-block's parity and,
  when it is odd, on the parity of the 0s so far. :func:`parity_span` is the longest block a string makes the
  model count that way (0: none; the original's targets also count every 1-block). A non-negative SSM can
  only approximate parity, so its strict accuracy should fall as the span grows.
* **Data.** With ``--paper-data``, every model is also scored on the paper's stored test strings, and the
  span distributions of the two data sets are set side by side: ours samples uniformly among the members of
  each length, the paper's generator does not.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

import languages
from analyses.study import bucket_label, by_bucket, md_table, trained_run_dirs, write_generated
from languages import cli
from languages.paper import stored_split
from trained_models.config import TrainConfig, make_data
from trained_models.evaluate import strict_per_string
from trained_models.registry import load

LANGUAGE = "tomita3"
SPAN_BUCKETS = ((0, 0), (1, 2), (3, 4), (5, 8), (9, 16), (17, 10**9))
PAPER_NUMBERS = "paper Mamba 1L / 2L / 3L: 25.99 / 12.49, 36.88 / 17.05, 60.85 / 29.37 (bin0 / bin1)"


def parity_span(s: str, targets: str = "correct") -> int:
    """The longest block whose parity the Tomita 3 targets of ``s`` depend on (0: none).

    ``"correct"``: for every maximal 1-block immediately followed by a 0, its length, and, when that length
    is odd, the length of the 0-block after it (``"1000"`` -> 3, ``"11000"`` -> 2, ``"0111"`` -> 0).
    ``"paper"``: the original forbids a 0 after an odd 1-block, so every 1-block counts, whatever follows
    it (``"0111"`` -> 3), and so does the 0-block after an odd one."""
    if targets not in languages.TARGETS:
        raise ValueError(f"targets must be one of {languages.TARGETS}, got {targets!r}")
    span = 0
    for ones, zeros in re.findall(r"(1+)(0*)", s):
        if zeros or targets == "paper":
            span = max(span, len(ones), len(zeros) if len(ones) % 2 else 0)
    return span


def measure_run(run_dir: Path, stored: Optional[dict[str, list[str]]] = None) -> dict[str, Any]:
    """One run's strict accuracy per bin under both target sets, its card's own numbers (a check that this
    re-evaluation is the training's), and per-string correctness and parity span on the targets it was trained
    on; with ``stored`` (the paper's stored ``bin0``/``bin1`` strings), its strict accuracy on those too."""
    model, card = load(run_dir)
    cfg = TrainConfig.from_dict(json.loads((run_dir / "train_config.json").read_text()))
    trained_on = cfg.language_params.get("targets", "correct")
    langs = {t: languages.get(LANGUAGE, **({"targets": t} if t == "paper" else {})) for t in languages.TARGETS}
    splits = make_data(cfg, langs[trained_on])
    model_name = (f"Mamba {cfg.layers}L {cfg.gate}" if cfg.model == "mamba"
                  else f"{cfg.model.capitalize()} {cfg.layers}L")
    res: dict[str, Any] = {"run": run_dir.name, "trained_on": trained_on, "model": model_name, "seed": cfg.seed,
                           "strings": "paper's" if cfg.paper_data else "ours",
                           "card": {b: m["strict_accuracy"] for b, m in card["metrics"].items()},
                           "strict": {}, "spans": {}, "ok": {}, "stored": {}, "data": splits}
    for b in ("bin0", "bin1"):
        strings = splits[b]
        for t, lang in langs.items():
            ok = strict_per_string(model, lang, strings, decode=cfg.decode)
            res["strict"][(t, b)] = float(ok.mean())
            if t == trained_on:
                res["ok"][b] = ok
        res["spans"][b] = np.array([parity_span(s, trained_on) for s in strings])
        for t, lang in langs.items():
            if stored:
                res["stored"][(t, b)] = float(strict_per_string(model, lang, stored[b], decode=cfg.decode).mean())
    return res


def span_counts(strings: Sequence[str], targets: str) -> list[int]:
    """How many of ``strings`` fall in each :data:`SPAN_BUCKETS` bucket of :func:`parity_span`."""
    span = np.array([parity_span(s, targets) for s in strings])
    return [n for _, n in by_bucket(np.ones(len(span), bool), span, SPAN_BUCKETS)]


def report(runs: list[dict[str, Any]], command: str, stored: Optional[dict[str, list[str]]] = None) -> str:
    """Markdown: the strict-accuracy table under both targets, accuracy by parity span, and with ``stored``
    (the paper's stored splits) the runs on those strings and both data sets' spans."""
    lines = ["# Tomita 3: targets and parity span", "",
             f"Generated by `{command}`. Strict accuracy in % on each run's own test strings (the medium budget's "
             "bin0 = lengths 1–100, bin1 = 101–150, 1,000 strings each), scored on our (correct) targets and on the "
             f"original repository's. {PAPER_NUMBERS}. `card` is the training's own score on its own targets "
             "(this re-evaluation must agree with it). `trained on strings`: ours (sampled) or the paper's stored ones "
             "(`--paper-data`); the test strings are always the run's own.", ""]
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    pair = lambda a, b: f"{pct(a)} / {pct(b)}"  # noqa: E731
    lines += md_table(["run", "model", "seed", "trained on strings", "targets", "card bin0 / bin1", "correct targets bin0 / bin1",
                       "paper targets bin0 / bin1"],
                      [[r["run"], r["model"], r["seed"], r["strings"], r["trained_on"],
                        pair(r["card"]["bin0"], r["card"]["bin1"]),
                        pair(r["strict"][("correct", "bin0")], r["strict"][("correct", "bin1")]),
                        pair(r["strict"][("paper", "bin0")], r["strict"][("paper", "bin1")])] for r in runs])
    lines += ["", "## Strict accuracy by parity span, on the targets each run was trained on", "",
              "Parity span: the longest block whose parity those targets depend on (`parity_span`; the original's "
              "targets also count every 1-block that no 0 follows). Each cell is `accuracy (strings)` over bin0 and "
              "bin1 together.", ""]
    rows = []
    for r in runs:
        ok = np.concatenate([r["ok"]["bin0"], r["ok"]["bin1"]])
        span = np.concatenate([r["spans"]["bin0"], r["spans"]["bin1"]])
        cells = [f"{pct(acc)} ({n})" if n else "–" for acc, n in by_bucket(ok, span, SPAN_BUCKETS)]
        rows.append([f"{r['run']} ({r['strings']} strings, {r['trained_on']} targets)", *cells])
    buckets = [f"span {bucket_label(lo, hi)}" for lo, hi in SPAN_BUCKETS]
    lines += md_table(["run", *buckets], rows)
    if stored:
        lines += ["", "## On the paper's stored test strings", "",
                  f"The same models on the paper's stored Tomita-3 test strings (`generated_ds/Tomita-3/`: bin0 "
                  f"{len(stored['bin0']):,}, bin1 {len(stored['bin1']):,} strings), strict accuracy in %, scored on "
                  f"each target set. {PAPER_NUMBERS}.", ""]
        lines += md_table(["run", "model", "seed", "trained on strings", "targets", "correct targets bin0 / bin1",
                           "paper targets bin0 / bin1"],
                          [[r["run"], r["model"], r["seed"], r["strings"], r["trained_on"],
                            pair(r["stored"][("correct", "bin0")], r["stored"][("correct", "bin1")]),
                            pair(r["stored"][("paper", "bin0")], r["stored"][("paper", "bin1")])] for r in runs])
        ours = next((r["data"] for r in runs if r["seed"] == 0), runs[0]["data"])
        lines += ["", "## Parity spans of the two data sets", "",
                  "Strings per parity-span bucket: the paper's stored splits against ours (the seed-0 run's splits; "
                  "every seed samples the same way). `correct` / `paper`: the span on that target set.", ""]
        rows = [[f"{who} {split} ({t})", *span_counts(data[split], t)]
                for split in ("train", "bin0", "bin1") for t in languages.TARGETS
                for who, data in (("paper's", stored), ("ours", ours))]
        lines += md_table(["split", *buckets], rows)
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = cli.ArgumentParser(prog="python -m analyses.tomita3_targets", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=Path, nargs="+",
                    default=[Path("runs/suite/medium/tomita3"), Path("runs/paper-targets/medium/tomita3"),
                             Path("runs/paper-data/medium/tomita3")],
                    help="folders holding Tomita 3 run folders (each with card.json and train_config.json)")
    ap.add_argument("--paper-data", metavar="REPO",
                    help="a clone or mirror of the paper's repository (lacoco-lab/ssm_expressivity): also score "
                         "every run on its stored Tomita-3 test strings and compare the two data sets")
    ap.add_argument("--out", type=Path, default=Path("results/medium/tomita3.md"))
    return ap


@cli.cli("python -m analyses.tomita3_targets")
def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    dirs = trained_run_dirs(args.runs, "train them with `python -m trained_models.suite --languages tomita3`, "
                                       "runs/paper-targets/run.sh and runs/paper-data/run.sh")
    stored = None
    if args.paper_data:
        stored = {split: stored_split(args.paper_data, LANGUAGE, split) for split in ("train", "bin0", "bin1")}
    torch.set_num_threads(1)
    runs = []
    for d in dirs:
        r = measure_run(d, stored)
        print(f"[tomita3] {d}: trained on {r['trained_on']}, " + ", ".join(
            f"{t} {b} {100 * v:.1f}" for (t, b), v in r["strict"].items()) + "".join(
            f", paper's strings {t} {b} {100 * v:.1f}" for (t, b), v in r["stored"].items()), flush=True)
        runs.append(r)
    write_generated(args.out, "python -m analyses.tomita3_targets", argv,
                    lambda command: report(runs, command, stored))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
