"""Throughput of the suite on this machine: runs per hour, today's way of running it against the levers.

Run: ``python -m benchmarks.suite_throughput`` (``--help`` for the run set). Prints a markdown table.

The same runs (default: the ``small`` budget's Mamba 2L on D_2, Tomita 7, parity and Boolean-3, seed 0:
four runs of 186-375 optimiser steps, 14-16 s of training each on an idle core) are trained from scratch once per configuration, each into a
fresh runs directory, and the configurations are timed one after another (wall clock from the first
run's start to the last run's result; this process has imported the toolkit and sized the data
before the first timing, worker processes pay their own imports):

* ``today``: the suite as it ran before ``--jobs``/``--backend`` were worth using: one run after the
  other in one process, one torch thread (``--jobs 1``, the default).
* ``2 threads``: one run after the other, each with two torch threads (``train``'s own default).
* ``joblib 2 jobs``: two worker processes, one torch thread each (``--jobs 2``).
* ``ray 2 CPUs``: a local Ray with two CPUs, one task per run (``--backend ray --jobs 2``), Ray's
  start-up and shutdown included.

Runs per hour = runs / wall seconds x 3600; the ratio is against ``today`` measured in the same
invocation. The tiny models are overhead-bound on a CPU (Python dispatch, not arithmetic): a second
thread inside one run buys little, a second run on the other core nearly doubles throughput when the
core is free. The machine may be shared: the load average is printed before and after each
configuration, and a configuration measured under more load than another is not comparable to it.
Every configuration must give the same per-run accuracies (training is deterministic for a seed);
the table says whether they did. The budget's per-run cap (``small``: 4 CPU minutes) counts this process's CPU time, so the
machine's load does not move where a run stops; the table counts the runs that hit it.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see benchmarks.scan_bench)

import torch  # noqa: E402

from trained_models import executors, suite  # noqa: E402
from trained_models.config import BUDGET_STOPS  # noqa: E402
from trained_models.training import train  # noqa: E402

CONFIGS = ("today", "2 threads", "joblib 2 jobs", "ray 2 CPUs")


def _train_with_threads(runs, threads: int) -> None:
    """The runs one after the other, each with ``threads`` torch threads (the suite forces one)."""
    for run in runs:
        cfg = replace(run.config(), threads=threads)
        card = train(cfg, run.train_dir, resume=True, command=run.command(), progress=False)
        if not card.get("metrics"):  # cut by the time cap: evaluated as the suite does
            capped_by = card["stop_reason"]
            card = train(cfg, run.train_dir, resume=True, finish=True, command=run.command(), progress=False)
            card["stop_reason"] = capped_by
        run.result_path.parent.mkdir(parents=True, exist_ok=True)
        run.result_path.write_text(json.dumps({"strict": {b: 100 * m["strict_accuracy"]
                                                          for b, m in card["metrics"].items() if b.startswith("bin")},
                                               "stop_reason": card["stop_reason"]}))
    torch.set_num_threads(1)


def measure(config: str, runs_args: dict, root: Path) -> dict:
    runs = suite.plan(runs_args["budget"], root / config.replace(" ", "_"), runs_args["languages"],
                      runs_args["models"], runs_args["seeds"])
    load0 = os.getloadavg()[0]
    t0 = time.time()
    if config == "today":
        out = executors.run_suite(runs, jobs=1)
    elif config == "2 threads":
        _train_with_threads(runs, 2)
        out = {"failed": 0}
    elif config == "joblib 2 jobs":
        out = executors.run_suite(runs, jobs=2)
    else:
        out = executors.run_suite(runs, jobs=2, backend="ray")
    wall = time.time() - t0
    if out["failed"]:
        raise RuntimeError(f"{config}: {out['failures']}")
    results = [json.loads(r.result_path.read_text()) for r in runs]
    capped = sum(str(r.get("stop_reason", "")).startswith(BUDGET_STOPS) for r in results)
    return {"config": config, "runs": len(runs), "wall": wall, "per_hour": len(runs) / wall * 3600,
            "load": (load0, os.getloadavg()[0]), "strict": [r["strict"] for r in results], "capped": capped}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.suite_throughput", description=__doc__.split("\n")[0])
    ap.add_argument("--budget", default="small")
    ap.add_argument("--languages", nargs="+", default=["d2", "tomita7", "parity", "boolean3"])
    ap.add_argument("--models", nargs="+", default=["mamba-2l"])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    args = ap.parse_args(argv)
    runs_args = dict(budget=args.budget, languages=args.languages, models=args.models, seeds=args.seeds)
    for run in suite.plan(args.budget, "warm-up", args.languages, args.models, args.seeds):  # data sizes, untimed
        run.config()
    rows = []
    with tempfile.TemporaryDirectory(prefix="suite_throughput_") as tmp:
        for config in args.configs:
            rows.append(measure(config, runs_args, Path(tmp)))
            r = rows[-1]
            print(f"[bench] {config}: {r['runs']} runs in {r['wall']:.1f} s (load {r['load'][0]:.1f} -> "
                  f"{r['load'][1]:.1f})", flush=True)
    base = next((r for r in rows if r["config"] == "today"), rows[0])
    print(f"\n{rows[0]['runs']} runs: budget {args.budget}, {' '.join(args.models)} on {' '.join(args.languages)}, "
          f"{args.seeds} seed(s); {os.cpu_count()} CPU cores (1-minute load average before -> after each row)\n")
    print(f"| configuration | wall s | runs / hour | ratio vs {base['config']} | load | same accuracies | "
          "runs cut by the time cap |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        same = "yes" if r["strict"] == base["strict"] else "no"
        print(f"| {r['config']} | {r['wall']:.1f} | {r['per_hour']:.0f} | {r['per_hour'] / base['per_hour']:.2f} | "
              f"{r['load'][0]:.1f} -> {r['load'][1]:.1f} | {same} | {r['capped']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
