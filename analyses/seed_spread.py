"""How much a study's key numbers move from seed to seed: one row per number, its value under each
seed, the mean and the spread (largest minus smallest).

::

    python -m analyses.dyck_probe --seed 0 --out outputs/seed0     # likewise --seed 1, --seed 2
    python -m analyses.seed_spread outputs/seed0/report.json outputs/seed1/report.json \\
        outputs/seed2/report.json --out results/dyck_probe_seeds.md

The seed changes every sampled string, probe split, interchange pair and DAS initialisation, so the
spread is what a reader should allow before calling two numbers different. The key numbers of a
model in a ``report.json`` (:func:`key_numbers`): close and strict accuracy; per probe (layer, site,
variable) its held-out and longer-string accuracy, and for the top bracket its accuracy read per depth;
per whole-layer swap its IIA; per DAS site the best rank's IIA, held out and on longer strings (with
the rank, which may differ between seeds).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from analyses.figures import short_site
from analyses.study import md_table
from languages import cli
from languages.io import atomic_write_text

#: Rows whose spread exceeds this are marked in the table.
WIDE = 0.05


def key_numbers(report: Mapping[str, Any]) -> dict[str, float]:
    """``{"model | number": value}`` for the numbers listed in the module docstring (missing parts skipped)."""
    out: dict[str, float] = {}
    for name, m in report.get("models", {}).items():
        def put(key: str, value: Any) -> None:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
                out[f"{name} | {key}"] = float(value)

        for kind in ("close_accuracy", "strict_accuracy"):
            for split, v in (m.get(kind) or {}).items():
                put(f"{kind.split('_')[0]} accuracy {split}", v)
        for r in m.get("probes", []):
            where = f"probe L{r['layer'] + 1} {short_site(r['site'])} {r['variable']}"
            put(where, r.get("accuracy"))
            put(f"{where} (longer)", r.get("ood_accuracy"))
            put(f"{where} given depth", r.get("accuracy_given_depth"))
        for r in m.get("iia", []):
            layer = r["layer"] if r["layer"] == "all" else r["layer"] + 1
            put(f"whole-layer IIA L{layer} {r['variable']}", r.get("iia"))
        for r in m.get("das", []):
            where = f"DAS {r['variable']} {r.get('site') or 'L' + '+'.join(map(str, r['layers']))} best"
            put(f"{where} IIA", r.get("iia"))
            put(f"{where} IIA (longer)", r.get("iia_ood"))
            put(f"{where} rank", r.get("rank"))
    return out


def spread_rows(reports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per key number present in every report: ``key``, ``values`` (per report), ``mean``, ``spread``."""
    numbers = [key_numbers(r) for r in reports]
    keys = [k for k in numbers[0] if all(k in n for n in numbers[1:])]
    rows = []
    for k in keys:
        vals = [n[k] for n in numbers]
        rows.append({"key": k, "values": vals, "mean": float(np.mean(vals)), "spread": float(max(vals) - min(vals))})
    return rows


def to_markdown(rows: Sequence[Mapping[str, Any]], seeds: Sequence[Any], command: str = "") -> str:
    wide = [r for r in rows if r["spread"] > WIDE and not r["key"].endswith(" rank")]
    lines = ["# Seed-to-seed spread of the key numbers", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [f"{len(rows)} numbers over seeds {', '.join(map(str, seeds))}; {len(wide)} move by more than "
              f"{WIDE} (marked *).", ""]
    table = [[("* " if r in wide else "") + r["key"], *r["values"], r["mean"], r["spread"]] for r in rows]
    return "\n".join(lines + md_table(["number", *[f"seed {s}" for s in seeds], "mean", "spread"], table)) + "\n"


def _read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise cli.UsageError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise cli.UsageError(f"{path} is not a JSON report ({e})") from None
    if not isinstance(report, dict) or "models" not in report:
        raise cli.UsageError(f"{path} has no 'models' section: not a study's report.json")
    return report


@cli.cli("python -m analyses.seed_spread")
def main(argv: Optional[list[str]] = None) -> int:
    ap = cli.ArgumentParser(prog="python -m analyses.seed_spread", description=__doc__.split("\n")[0])
    ap.add_argument("reports", nargs="+", type=Path, help="report.json files of the same study under different seeds")
    ap.add_argument("--out", type=Path, help="markdown file to write (default: print)")
    args = ap.parse_args(argv)
    if len(args.reports) < 2:
        raise cli.UsageError("give at least two report.json files (one per seed)")
    reports = [_read_report(p) for p in args.reports]
    seeds = [r.get("settings", {}).get("seed", i) for i, r in enumerate(reports)]
    if len(set(map(str, seeds))) < len(seeds):
        raise cli.UsageError(f"the reports share seeds {seeds}: a spread needs different seeds")
    rows = spread_rows(reports)
    if not rows:
        raise cli.UsageError("the reports have no key number in common (reports of different studies?)")
    text = to_markdown(rows, seeds, "python -m analyses.seed_spread " + " ".join(map(str, args.reports)))
    if args.out:
        atomic_write_text(args.out, text)
        print(f"Wrote {args.out}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
