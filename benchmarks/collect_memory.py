"""Peak memory and time of ``probe.collect`` (the bound it must meet: under 2 GB).

Setting: a 2-layer HookedMamba for Dyck(8, 10) (d_model 32, d_state 16, expand 2, so
``blocks.{l}.mixer.hook_ssm_state`` is [B, L, 64, 16] -> 1,024 features per layer), sites
``hook_ssm_state`` and ``hook_resid_post`` of both layers (2 x 1,024 + 2 x 32 = 2,112 features), 1,000
strings of length 701-1400 (about a million positions), labels ``depth`` and ``top``. Memory does not
depend on the weights, so the model is randomly initialised (seed 0).

Each row runs in a fresh subprocess and reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak
resident set of that process: interpreter, torch, model, strings and the collection together), the
resident set just before ``collect`` started, and the wall time of sampling and of collection.

    python -m benchmarks.collect_memory            # the table (a few minutes on 2 shared cores)
    python -m benchmarks.collect_memory --n 50     # a quick smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

import languages
from hooks.mamba import HookedMamba, MambaConfig
from languages.datasets import Vocab
from probe import collect
from trained_models.tables import markdown_table

BOUND_MB = 2048.0
ROWS = [  # (positions kept, storage dtype, batch size)
    (50_000, "float32", 8),
    (50_000, "float16", 8),
    (10_000, "float32", 8),
    (50_000, "float32", 32),
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def run_child(cfg: dict) -> dict:
    """One measurement, in this process (the parent runs it in a fresh one)."""
    torch.set_num_threads(cfg.get("threads", 1))
    torch.manual_seed(0)
    lang = languages.get("dyck", K=8, h=10)
    vocab = Vocab(lang.alphabet)
    model = HookedMamba(MambaConfig(d_model=32, n_layers=2, vocab_size=vocab.size, d_state=16,
                                    expand=2)).eval()
    sites = [f"blocks.{l}.mixer.hook_ssm_state" for l in range(2)] + \
            [f"blocks.{l}.hook_resid_post" for l in range(2)]
    t0 = time.perf_counter()
    strings = lang.sample(cfg["n"], min_len=cfg["min_len"], max_len=cfg["max_len"], seed=0)
    t_sample = time.perf_counter() - t0
    rss_before = _current_rss_mb()
    t0 = time.perf_counter()
    coll = collect(model, lang, strings, sites, ["depth", "top"], positions=cfg["positions"],
                   batch_size=cfg["batch_size"], dtype=getattr(torch, cfg["dtype"]), seed=0, vocab=vocab)
    t_collect = time.perf_counter() - t0
    return {
        **cfg,
        "tokens_seen": int(sum(len(s) + 1 for s in strings)),
        "kept": len(coll),
        "features": int(sum(a.shape[1] for a in coll.acts.values())),
        "stored_mb": sum(a.nbytes for a in coll.acts.values()) / 2**20,
        "rss_before_mb": rss_before,
        "peak_rss_mb": _rss_mb(),
        "sample_s": t_sample,
        "collect_s": t_collect,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="number of strings (default 1000)")
    ap.add_argument("--min-len", type=int, default=701)
    ap.add_argument("--max-len", type=int, default=1400)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads in the measured process (default 1: on a shared two-core machine "
                         "one thread is faster than two)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return 0

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    results = []
    for positions, dtype, batch_size in ROWS:
        cfg = {"n": args.n, "min_len": args.min_len, "max_len": args.max_len, "positions": positions,
               "dtype": dtype, "batch_size": batch_size, "threads": args.threads}
        proc = subprocess.run([sys.executable, "-m", "benchmarks.collect_memory", "--child", json.dumps(cfg)],
                              capture_output=True, text=True, env=env, cwd=root)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    print(f"probe.collect memory: 2-layer HookedMamba (d_model 32, d_state 16, expand 2), Dyck(8,10), "
          f"{args.n} strings of length {args.min_len}-{args.max_len}; sites hook_ssm_state + "
          f"hook_resid_post x 2 layers; torch threads {args.threads}\n")
    cols = ["positions", "dtype", "batch", "tokens seen", "kept", "features", "stored MB",
            "RSS before collect MB", "peak RSS MB", "sample s", "collect s"]
    rows = [[r["positions"], r["dtype"], r["batch_size"], r["tokens_seen"], r["kept"], r["features"],
             f"{r['stored_mb']:.0f}", f"{r['rss_before_mb']:.0f}", f"{r['peak_rss_mb']:.0f}", f"{r['sample_s']:.1f}",
             f"{r['collect_s']:.1f}"] for r in results]
    print("\n".join(markdown_table(cols, rows, rule="---:")))
    r0 = results[0]
    all_mb = r0["tokens_seen"] * r0["features"] * 4 / 2**20
    print(f"\nKeeping every position instead would store {all_mb:.0f} MB of float32 activations (not run).")
    ok = r0["peak_rss_mb"] < BOUND_MB
    print(f"Bound: peak RSS {r0['peak_rss_mb']:.0f} MB for {r0['positions']} positions "
          f"({'<' if ok else '>='} {BOUND_MB:.0f} MB): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
