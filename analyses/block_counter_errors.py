"""Where runs on a^n b^n, a^n b^n c^n and a^n b^n c^n d^n err: at the positions the counts decide, or elsewhere.

Run: ``python -m analyses.block_counter_errors`` (after the suite's runs of the three languages; ``--help`` for
the folders). Writes ``results/medium/block_counter_errors.md``.

In ``a^n b^n c^n`` (k blocks of one letter, ``n`` each) the allowed-next set after a prefix is decided by the
counts at the ends of blocks 2..k (:func:`count_decided`): after ``a^n b^n`` only ``c`` may follow, after
``a^n b^n c^n`` only the end. Everywhere else a model that knows which block it is in but counts nothing is
right: in the first block ``a`` or ``b`` may follow, inside block j ≥ 2 its own letter. Such a model goes on
predicting the current block's letter at a count-decided end, and the next input shows it the switch one step
late. This module scores a run on its own training strings position by position and asks which kind of
model it is: the share of its errors at count-decided positions, and what it predicts there (its current
block's letter alone: "goes on").

The suite's a^n b^n c^n and a^n b^n c^n d^n runs fit none of their training strings (``suite --fit-check``)
with 99% of their positions right; this tells a run that is nearly right from one that has learnt no count.
"""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

import languages
from analyses.study import md_table, trained_run_dirs, write_generated
from hooks.metrics import allowed_from_logits
from languages import cli
from languages.datasets import encode_batch
from languages.vocab import Vocab
from trained_models.evaluate import TorchBatch, _logits, own_splits
from trained_models.registry import load

LANGUAGES = ("anbn", "anbncn", "anbncndn")


def blocks(s: str) -> tuple[str, int]:
    """The block letters of ``s`` and the common block length: ``"aabbcc"`` -> ``("abc", 2)``. ``s`` must be a
    non-empty string of equal blocks of distinct letters."""
    letters = "".join(dict.fromkeys(s))
    n, rem = divmod(len(s), max(1, len(letters)))
    if not s or rem or s != "".join(c * n for c in letters):
        raise ValueError(f"not a string of equal blocks: {s[:40]!r}")
    return letters, n


def count_decided(s: str) -> list[int]:
    """The prefix lengths of ``s`` whose allowed-next set the counts decide: the ends of blocks 2..k
    (``"aabbcc"`` -> ``[4, 6]``: after ``aabb`` only ``c``, after ``aabbcc`` only the end)."""
    letters, n = blocks(s)
    return [j * n for j in range(2, len(letters) + 1)]


def predicted(model: torch.nn.Module, language: Any, strings: Sequence[str], *, decode: str = "sigmoid",
              batch_size: int = 32) -> list[tuple[np.ndarray, list[frozenset]]]:
    """Per string: (is the decoded allowed-next set right, per prefix length 0..len) and the decoded sets (of
    symbols, :data:`languages.END` for the end)."""
    vocab = Vocab(language.alphabet)
    symbols = vocab.itos  # END_ID is languages.END
    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for k in range(0, len(strings), batch_size):
                chunk = list(strings[k:k + batch_size])
                tb = TorchBatch.from_batch(encode_batch(language, chunk, vocab))
                pred = allowed_from_logits(_logits(model(tb.tokens)), vocab, decode).numpy()
                want = np.asarray(tb.allowed, dtype=bool)
                for i, s in enumerate(chunk):
                    L = len(s) + 1
                    ok = (pred[i, :L] == want[i, :L]).all(-1)
                    sets = [frozenset(symbols[j] for j in np.flatnonzero(pred[i, t])) for t in range(L)]
                    out.append((ok, sets))
    finally:
        model.train(was_training)
    return out


def classify(strings: Sequence[str], scored: Sequence[tuple[np.ndarray, list[frozenset]]]) -> dict[str, Any]:
    """Errors of one run: at count-decided positions vs elsewhere, and what it predicts at the count-decided
    positions it gets wrong (``goes on``: its current block's letter alone)."""
    at = elsewhere = decided = 0
    goes_on = 0
    there: Counter = Counter()
    strict = []
    for s, (ok, sets) in zip(strings, scored):
        cd = set(count_decided(s))
        decided += len(cd)
        strict.append(bool(ok.all()))
        for t in np.flatnonzero(~ok):
            if t in cd:
                at += 1
                letter = s[t - 1]
                goes_on += sets[t] == frozenset(letter)
                there["".join(sorted(sets[t])) or "∅"] += 1
            else:
                elsewhere += 1
    positions = sum(len(ok) for ok, _ in scored)
    return {"strings": len(strings), "strict": float(np.mean(strict)), "positions": positions,
            "position_accuracy": 1 - (at + elsewhere) / positions, "decided": decided, "wrong_decided": at,
            "wrong_elsewhere": elsewhere, "goes_on": goes_on, "predicted_there": dict(there.most_common())}


def measure_run(run_dir: Path) -> dict[str, Any]:
    """One run on its own training strings (rebuilt from its saved config)."""
    model, card = load(run_dir)
    cfg = card["train_config"]
    language = languages.get(cfg["language"], **(cfg.get("language_params") or {}))
    if language.name not in LANGUAGES:
        raise ValueError(f"{run_dir}: a {language.name} run, not one of {', '.join(LANGUAGES)}")
    strings = own_splits(card, language)["train"]
    res = classify(strings, predicted(model, language, strings, decode=card.get("decode", "sigmoid")))
    return {"run": run_dir.name, "language": language.name, **res}


def report(runs: list[dict[str, Any]], command: str) -> str:
    lines = ["# a^n b^n, a^n b^n c^n, a^n b^n c^n d^n: where the runs err on their own training strings", "",
             f"Generated by `{command}`. Each run scored position by position on the strings it was trained on. "
             "`count-decided`: the ends of blocks 2..k, where only the next block's letter (or the end) may follow "
             "and the counts decide it; every other position a model that tracks the current block without "
             "counting gets right. `goes on`: of the wrong count-decided positions, those where the run predicts "
             "its current block's letter alone, as such a model does.", ""]
    for lang in LANGUAGES:
        rows = [r for r in runs if r["language"] == lang]
        if not rows:
            continue
        lines += [f"## {lang}", ""]
        lines += md_table(
            ["run", "strings", "strict %", "positions right %", "count-decided wrong", "other positions wrong",
             "goes on %", "predicted there"],
            [[r["run"], r["strings"], 100 * r["strict"], 100 * r["position_accuracy"],
              f"{r['wrong_decided']} of {r['decided']}", f"{r['wrong_elsewhere']} of {r['positions'] - r['decided']}",
              100 * r["goes_on"] / r["wrong_decided"] if r["wrong_decided"] else "–",
              ", ".join(f"{{{k}}} {v}" for k, v in list(r["predicted_there"].items())[:3]) or "–"]
             for r in rows], digits=1)
        lines.append("")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = cli.ArgumentParser(prog="python -m analyses.block_counter_errors", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=Path, nargs="+", default=[Path(f"runs/suite/medium/{x}") for x in LANGUAGES],
                    help="folders holding a^n b^n (c^n (d^n)) run folders (each with card.json and train_config.json)")
    ap.add_argument("--out", type=Path, default=Path("results/medium/block_counter_errors.md"))
    return ap


@cli.cli("python -m analyses.block_counter_errors")
def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    dirs = trained_run_dirs(args.runs, "train them with `python -m trained_models.suite --languages anbn anbncn "
                                       "anbncndn`")
    torch.set_num_threads(1)
    runs = []
    for d in dirs:
        r = measure_run(d)
        print(f"[block_counter_errors] {d}: {100 * r['strict']:.1f}% strict, {r['wrong_decided']} of "
              f"{r['decided']} count-decided wrong, {r['wrong_elsewhere']} elsewhere", flush=True)
        runs.append(r)
    write_generated(args.out, "python -m analyses.block_counter_errors", argv, lambda command: report(runs, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
