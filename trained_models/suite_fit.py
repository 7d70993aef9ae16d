"""How well each finished suite run fits its own training strings: the measurement behind "under-trained".

A run that departs from the paper's pattern either could not learn the language at all or was stopped before it
learned the strings it trained on. Strict accuracy on its own training strings tells the two apart: a run far
below 100% there never fitted its training set (the budget cut it, or it plateaued), so its test bins say
little about what the architecture can express. ``python -m trained_models.suite ... --fit-check`` measures it
for every finished seed of every departing cell (:func:`trained_models.suite_patterns.departures`) and keeps
the numbers in ``<report folder>/fit.csv``, one row a run, keyed by a digest of its saved result (a run
retrained is measured again); the report's departure table shows them per seed.

The training strings are rebuilt from the run's saved config (:func:`trained_models.evaluate.own_splits`, the
same strings ``python -m trained_models.evaluate --model RUN --own-split train`` scores), so the run's
training folder must be on disk (the folders are not committed; a run without one is skipped and named).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import languages
from languages.io import atomic_write_text
from trained_models.evaluate import evaluate_strings, own_splits
from trained_models.registry import load
from trained_models.suite_plan import Run

FIT_CSV = "fit.csv"
FIELDS = ("language", "variant", "seed", "result", "train_strict", "train_n")  # result: digest()
Key = tuple[str, str, int]  # (language, variant, seed)


def digest(result: dict[str, Any]) -> str:
    """16 hex digits of a saved suite result: the identity it records (:meth:`Run.identity`) and what training
    gave (steps, best step, test scores). A measurement belongs to that result; a run retrained, even under the
    same arguments, is measured again."""
    key = {k: result.get(k) for k in ("identity", "steps", "best_step", "strict")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def read_fits(folder: str | Path) -> dict[Key, dict[str, Any]]:
    """``fit.csv`` of a report folder: (language, variant, seed) -> its row (``train_strict`` in %, a float).
    A malformed file is an error that names it and the line."""
    path = Path(folder) / FIT_CSV
    if not path.exists():
        return {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or set(FIELDS) - set(reader.fieldnames):
            raise ValueError(f"{path}: expected the columns {', '.join(FIELDS)}, got "
                             f"{', '.join(reader.fieldnames or ['nothing'])}")
        out = {}
        for r in reader:
            try:
                row = {**r, "seed": int(r["seed"]), "train_strict": float(r["train_strict"]),
                       "train_n": int(r["train_n"])}
                if not 0 <= row["train_strict"] <= 100 or not r["language"] or not r["variant"] or not r["result"]:
                    raise ValueError("a value out of range or missing")
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}, line {reader.line_num}: not a fit row ({e}): {r}") from None
            out[(row["language"], row["variant"], row["seed"])] = row
    return out


def write_fits(folder: str | Path, fits: dict[Key, dict[str, Any]]) -> Path:
    """``fit.csv``, atomically, in a stable order (language, variant, seed)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for key in sorted(fits):
        writer.writerow({k: fits[key][k] for k in FIELDS})
    return atomic_write_text(Path(folder) / FIT_CSV, buf.getvalue())


def measure(run: Run) -> dict[str, Any]:
    """Strict accuracy (%) of the run's best weights on its own training strings."""
    model, card = load(run.train_dir)
    cfg = dict(card["train_config"])
    if run.paper_data is not None:  # this clone of the stored data, wherever the run was trained from
        cfg["paper_data"] = run.paper_data
    language = languages.get(cfg["language"], **(cfg.get("language_params") or {}))
    strings = own_splits({**card, "train_config": cfg}, language)["train"]
    res = evaluate_strings(model, language, strings, decode=card.get("decode", "sigmoid"))
    return {"language": run.language, "variant": run.variant, "seed": run.seed, "result": digest(run.saved()),
            "train_strict": round(100 * res["strict_accuracy"], 2), "train_n": len(strings)}


def current(fits: dict[Key, dict[str, Any]], run: Run) -> Optional[dict[str, Any]]:
    """The run's measurement if ``fits`` holds one made for its saved result."""
    row, saved = fits.get((run.language, run.variant, run.seed)), run.saved()
    return row if row is not None and saved is not None and row["result"] == digest(saved) else None


def of_result(fits: dict[Key, dict[str, Any]], key: Key, result: dict[str, Any]) -> Optional[float]:
    """The training-string accuracy (%) measured for run ``key`` (language, variant, seed) whose saved result is
    ``result``, or ``None`` where none was measured for that result (:func:`digest`)."""
    row = fits.get(key)
    if row is None or row["result"] != digest(result):
        return None
    return row["train_strict"]


def update_fits(runs: Iterable[Run], folder: str | Path, log: Callable[[str], None] = print
                ) -> dict[Key, dict[str, Any]]:
    """Measure every finished run of ``runs`` that ``folder/fit.csv`` lacks (or holds for another result),
    writing the file after each one (an interruption keeps what was measured). Runs not finished are passed
    over; a finished run without its training folder is named and skipped."""
    folder = Path(folder)
    fits = read_fits(folder)
    for run in runs:
        if run.status() != "done" or current(fits, run) is not None:
            continue
        if not (run.train_dir / "card.json").exists():
            log(f"[fit] {run.name}: no training folder ({run.train_dir}); not measured")
            continue
        row = measure(run)
        fits[(run.language, run.variant, run.seed)] = row
        write_fits(folder, fits)
        log(f"[fit] {run.name}: {row['train_strict']:.2f}% of its {row['train_n']} training strings")
    return fits
