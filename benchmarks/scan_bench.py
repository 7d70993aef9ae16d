"""Speed and memory of HookedMamba's scan against its peers (a benchmark, not a timed test).

Run: ``make bench`` (= ``python -m benchmarks.scan_bench``; ``--help`` for options). Prints markdown:

1. Whole model, batch 32, length 512, d_model 64, 2 layers, d_state 16, vocab 16, same weights for all:
   HookedMamba with the fast scan (no state hook; every ``hook_ssm_state`` cached by ``run_with_cache``;
   the scan on torch's threads instead of its default single thread), HookedMamba with the sequential
   reference scan, HF ``MambaForCausalLM`` (default torch path, and ``use_mambapy=True``).
2. The recurrence ``h_t = a_t h_{t-1} + b_t`` alone at B32 L512 E128 N16: ours, mambapy's ``pscan``
   (on torch's threads, and on one thread), the sequential reference, and the memory-bandwidth floor:
   elementwise passes that read and write the same tensors as the recurrence's forward (read a, b;
   write h) and backward (read dh, a, h; write grad_b, grad_a), with fresh outputs as any autograd op
   has, and into preallocated outputs; run on the same number of threads as our scan.
3. The speed and memory targets (the table's ``target`` column) as ratios; time and memory against length (512 / 2048 / 8192).

Method: ``torch.set_num_threads(--threads)`` (2), ``OMP_WAIT_POLICY=PASSIVE`` unless set (see below),
float32 CPU. Times: median and minimum of ``--reps``
repeats after a warm-up, the configurations interleaved round-robin so that load from other processes
on a shared machine spreads over all of them (the load average is printed; the minimum is the better
estimate of unloaded speed). HF's default path has a backward that is quadratic in length (it indexes
``x[:, :, t]`` in a Python loop): its forward+backward runs once. Peak memory: growth of the resident
set's high-water mark (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``; ``ru_maxrss`` where
that is unavailable) during one forward, then one forward+backward, each configuration in a fresh
subprocess with glibc told to return freed memory at once (``MALLOC_MMAP_THRESHOLD_=65536``,
``MALLOC_TRIM_THRESHOLD_=0``) so that the RSS follows the live tensors (tracemalloc does not see
torch's allocations).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# OpenMP threads that spin while waiting turn a busy shared machine into a lottery: measured here with
# other jobs running, one forward+backward of the whole model took 13-69 s with libgomp's default
# policy and 0.9-3 s with PASSIVE. It must be set before torch loads OpenMP; it applies to every
# configuration alike (and helps the multi-threaded peers more than our single-threaded scan).
# Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hooks import HookedMamba, MambaConfig, scan  # noqa: E402

WHOLE = dict(batch=32, length=512, d_model=64, n_layers=2, d_state=16, vocab=16)
REC = dict(batch=32, length=512, d_inner=128, d_state=16)

WHOLE_ROWS = ["ours_fast", "ours_fast_cache_states", "ours_fast_scan_threads_torch", "ours_sequential", "hf_default", "hf_mambapy"]
REC_ROWS = ["rec_ours", "rec_ours_scan_threads_torch", "rec_pscan", "rec_pscan_1thread", "rec_reference", "floor_alloc", "floor_prealloc"]
LABELS = {
    "ours_fast": "HookedMamba, fast scan (no state hook)",
    "ours_fast_cache_states": "HookedMamba, fast scan, every hook_ssm_state cached",
    "ours_fast_scan_threads_torch": "HookedMamba, fast scan on torch's threads (set_scan_threads(None))",
    "ours_sequential": "HookedMamba, sequential reference scan",
    "hf_default": "HF MambaForCausalLM, default (use_mambapy=False)",
    "hf_mambapy": "HF MambaForCausalLM, use_mambapy=True",
    "rec_ours": "ours: hooks.scan.linear_recurrence",
    "rec_ours_scan_threads_torch": "ours on torch's threads (set_scan_threads(None))",
    "rec_pscan": "mambapy pscan",
    "rec_pscan_1thread": "mambapy pscan, 1 thread",
    "rec_reference": "sequential reference (linear_recurrence_ref)",
    "floor_alloc": "floor: elementwise passes, fresh outputs",
    "floor_prealloc": "floor: elementwise passes, preallocated outputs",
}


class _threads:
    """Temporarily run torch on ``n`` intra-op threads (None: unchanged)."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        if self.n is not None:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


class _scan_threads_set:
    """Temporarily ``hooks.scan.set_scan_threads(n)``."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = scan.get_scan_threads()
        scan.set_scan_threads(self.n)

    def __exit__(self, *exc):
        scan.set_scan_threads(self.old)


# ------------------------------------------------------------------------------------------------
# Workloads: name -> (forward fn, forward+backward fn)
# ------------------------------------------------------------------------------------------------


def _whole_model_workload(name: str, batch: int, length: int):
    w = WHOLE
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(0, w["vocab"], (batch, length), generator=g)
    targets = torch.randint(0, w["vocab"], (batch, length), generator=g)
    kind = "sequential" if name == "ours_sequential" else "fast"
    cfg = MambaConfig(d_model=w["d_model"], n_layers=w["n_layers"], vocab_size=w["vocab"], d_state=w["d_state"], scan=kind)
    ours = HookedMamba(cfg, seed=0)
    if name.startswith("hf_"):
        import transformers  # the peer: optional (the bench extra)

        transformers.logging.set_verbosity_error()
        reference = ours.to_hf()
        hf_cfg = reference.config
        hf_cfg.use_mambapy = name == "hf_mambapy"
        model = transformers.MambaForCausalLM(hf_cfg)
        model.load_state_dict(reference.state_dict())
        model.train()

        def run():
            return model(toks, use_cache=False).logits
    elif name == "ours_fast_cache_states":
        model = ours

        def run():
            logits, cache = model.run_with_cache(toks, names_filter=lambda n: n.endswith("hook_ssm_state"))
            assert len(cache) == w["n_layers"]
            run.cache = cache  # kept alive, as a user would
            return logits
    else:
        model = ours

        def run():
            return model(toks)

    threads = None if name == "ours_fast_scan_threads_torch" else scan.get_scan_threads()

    def fwd():
        with _scan_threads_set(threads), torch.no_grad():
            run()

    def fwd_bwd():
        with _scan_threads_set(threads):
            model.zero_grad(set_to_none=True)
            logits = run()
            F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()

    return fwd, fwd_bwd


def _recurrence_workload(name: str):
    r = REC
    g = torch.Generator().manual_seed(0)
    shape = (r["batch"], r["length"], r["d_inner"], r["d_state"])
    a = (torch.rand(shape, generator=g) * 0.5 + 0.5).requires_grad_()
    b = torch.randn(shape, generator=g).requires_grad_()
    dh = torch.randn(shape, generator=g)
    scan_threads = scan.get_scan_threads()
    if name.startswith("floor"):
        prealloc = name == "floor_prealloc"
        bufs = [torch.empty(shape) for _ in range(3)] if prealloc else None
        ad, bd = a.detach(), b.detach()

        def ffwd():  # read a, b; write h
            with _threads(scan_threads):
                return torch.mul(ad, bd, out=bufs[0]) if prealloc else ad * bd

        def fbwd(h):  # read dh, a, h; write grad_b, grad_a
            with _threads(scan_threads):
                if prealloc:
                    torch.mul(dh, ad, out=bufs[1])
                    torch.mul(bufs[1], h, out=bufs[2])
                else:
                    gb = dh * ad
                    _ = gb * h

        return ffwd, (lambda: fbwd(ffwd()))
    if name.startswith("rec_pscan"):
        from mambapy.pscan import pscan as fn  # the peer: optional (the bench extra)
    elif name == "rec_reference":
        fn = scan.linear_recurrence_ref
    else:
        fn = scan.linear_recurrence
    torch_threads = 1 if name == "rec_pscan_1thread" else None
    our_threads = None if name == "rec_ours_scan_threads_torch" else scan_threads

    def fwd():
        with _threads(torch_threads), _scan_threads_set(our_threads), torch.no_grad():
            fn(a, b)

    def fwd_bwd():
        with _threads(torch_threads), _scan_threads_set(our_threads):
            a.grad = b.grad = None
            fn(a, b).backward(dh)

    return fwd, fwd_bwd


def _workload(name: str, batch: int = WHOLE["batch"], length: int = WHOLE["length"]):
    if name in WHOLE_ROWS:
        return _whole_model_workload(name, batch, length)
    return _recurrence_workload(name)


# ------------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class _PeakRSS:
    """Growth (MB) of the resident-memory high-water mark over a block (see the module doc)."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current RSS
            self.base, self.method = _status_kb("VmRSS"), "VmHWM"
        except OSError:
            self.base, self.method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
        return self

    def __exit__(self, *exc):
        peak = _status_kb("VmHWM") if self.method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.mb = (peak - self.base) / 1024.0
        return False


def _memory_child(name: str, batch: int, length: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    if name in WHOLE_ROWS:  # create lazily-built kernels and buffers at a tiny size first
        f, fb = _workload(name, 2, 8)
        f()
        fb()
    fwd, fwd_bwd = _workload(name, batch, length)
    with _PeakRSS() as m_f:
        fwd()
    with _PeakRSS() as m_fb:
        fwd_bwd()
    return {"fwd_mb": m_f.mb, "fwd_bwd_mb": m_fb.mb, "method": m_fb.method}


def _memory(name: str, batch: int, length: int, threads: int) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, "-m", "benchmarks.scan_bench", "--threads", str(threads),
           "--_child", name, "--_batch", str(batch), "--_length", str(length)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=root, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"memory subprocess for {name} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _time_interleaved(workloads: dict[str, tuple[Callable, Callable]], reps: int, once: set = frozenset(),
                      budget_s: float = 60.0) -> dict:
    """{name: {"fwd": (median, min), "fwd_bwd": (median, min)}}. Configurations in ``once`` run their
    forward+backward a single time; any configuration stops repeating after ``budget_s`` seconds."""
    times = {n: {"fwd": [], "fwd_bwd": []} for n in workloads}
    for rep in range(reps + 1):  # rep 0 is the warm-up
        for name, (fwd, fwd_bwd) in workloads.items():
            for kind, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
                done = times[name][kind]
                if kind == "fwd_bwd" and name in once:
                    if rep != 1:
                        continue
                elif done and sum(done) > budget_s:
                    continue
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                if rep > 0 or (kind == "fwd_bwd" and name in once):
                    done.append(dt)
    return {n: {k: ((statistics.median(v), min(v)) if v else (None, None)) for k, v in d.items()} for n, d in times.items()}


def _fmt(x):
    if x is None:
        return "n/a"
    return f"{x:.3f}" if x < 100 else f"{x:.0f}"


def _fmt_t(pair):
    med, lo = pair
    return "n/a" if med is None else f"{_fmt(med)} ({_fmt(lo)})"


def _table(rows, t, mem):
    print("| configuration | fwd s, median (min) | fwd+bwd s, median (min) | peak MB fwd | peak MB fwd+bwd |")
    print("|---|---:|---:|---:|---:|")
    for n in rows:
        m = mem.get(n, {})
        fm = "n/a" if m.get("fwd_mb") is None else f"{m['fwd_mb']:.0f}"
        fbm = "n/a" if m.get("fwd_bwd_mb") is None else f"{m['fwd_bwd_mb']:.0f}"
        print(f"| {LABELS[n]} | {_fmt_t(t[n]['fwd'])} | {_fmt_t(t[n]['fwd_bwd'])} | {fm} | {fbm} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for every configuration")
    p.add_argument("--reps", type=int, default=5, help="timed repeats per configuration (after one warm-up)")
    p.add_argument("--quick", action="store_true", help="skip HF's default path (its backward takes minutes)")
    p.add_argument("--lengths", type=int, nargs="*", default=[512, 2048, 8192])
    p.add_argument("--length-batch", type=int, default=4, help="batch size of the length sweep")
    p.add_argument("--json", help="also write all numbers to this file")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    p.add_argument("--_batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--_length", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        print(json.dumps(_memory_child(args._child, args._batch, args._length, args.threads)))
        return

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    print(f"# scan benchmark: torch {torch.__version__}, torch.set_num_threads({args.threads}), float32 CPU, "
          f"hooks.scan internal threads {scan.get_scan_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"{os.cpu_count()} CPUs, "
          f"load average at start {load0[0]:.2f}\n")
    results: dict = {"load_start": load0, "threads": args.threads}

    whole_rows = [n for n in WHOLE_ROWS if not (args.quick and n == "hf_default")]
    t_whole = _time_interleaved({n: _workload(n) for n in whole_rows}, args.reps, once={"hf_default"})
    t_rec = _time_interleaved({n: _workload(n) for n in REC_ROWS}, args.reps)
    if args.quick:
        t_whole["hf_default"] = {"fwd": (None, None), "fwd_bwd": (None, None)}
    mem = {n: _memory(n, WHOLE["batch"], WHOLE["length"], args.threads) for n in whole_rows}
    mem.update({n: _memory(n, REC["batch"], REC["length"], args.threads) for n in REC_ROWS})
    results.update(whole=t_whole, recurrence=t_rec, memory=mem)

    w, r = WHOLE, REC
    print(f"## Whole model: batch {w['batch']}, length {w['length']}, d_model {w['d_model']}, {w['n_layers']} layers, "
          f"d_state {w['d_state']}, vocab {w['vocab']}\n")
    _table(WHOLE_ROWS, t_whole, mem)
    if not args.quick:
        print("\n(HF default: forward+backward run once.)")
    print(f"\n## Recurrence h_t = a_t h_(t-1) + b_t alone: B {r['batch']}, L {r['length']}, E {r['d_inner']}, "
          f"N {r['d_state']} (floors on {scan.get_scan_threads() or args.threads} thread(s), like our scan)\n")
    _table(REC_ROWS, t_rec, mem)

    def ratio(x, y, i):
        return None if (x[i] is None or y[i] is None) else x[i] / y[i]

    ours, rec = t_whole["ours_fast"]["fwd_bwd"], t_rec["rec_ours"]["fwd_bwd"]
    checks = [
        ("whole fwd+bwd: HF use_mambapy=True / ours", t_whole["hf_mambapy"]["fwd_bwd"], ours, ">=", 1.5),
        ("whole fwd+bwd: HF default / ours", t_whole["hf_default"]["fwd_bwd"], ours, ">=", 10.0),
        ("recurrence fwd+bwd: pscan / ours", t_rec["rec_pscan"]["fwd_bwd"], rec, ">=", 2.0),
        ("recurrence fwd+bwd: pscan on 1 thread / ours", t_rec["rec_pscan_1thread"]["fwd_bwd"], rec, ">=", 2.0),
        ("recurrence fwd+bwd: ours / floor, fresh outputs", rec, t_rec["floor_alloc"]["fwd_bwd"], "<=", 2.5),
        ("recurrence fwd+bwd: ours / floor, preallocated outputs", rec, t_rec["floor_prealloc"]["fwd_bwd"], "<=", 2.5),
        ("forward: every state cached / uncached", t_whole["ours_fast_cache_states"]["fwd"], t_whole["ours_fast"]["fwd"], "<=", 1.5),
    ]
    print("\n## Targets (HF default: its single run against our median and our minimum)\n")
    print("| ratio | from medians | from minima | target | met (medians) |")
    print("|---|---:|---:|---:|:---:|")
    results["targets"] = {}
    for label, x, y, op, target in checks:
        med, lo = ratio(x, y, 0), ratio(x, y, 1)
        met = "n/a" if med is None else ("yes" if (med >= target if op == ">=" else med <= target) else "NO")
        print(f"| {label} | {'n/a' if med is None else f'{med:.2f}'} | {'n/a' if lo is None else f'{lo:.2f}'} | "
              f"{op} {target} | {met} |")
        results["targets"][label] = (med, lo)

    if args.lengths:
        b = args.length_batch
        print(f"\n## Length: HookedMamba fast scan, batch {b}, otherwise as the whole-model table\n")
        print("| length | fwd s, median (min) | fwd+bwd s, median (min) | fwd+bwd us/token (min) | peak MB fwd | peak MB fwd+bwd |")
        print("|---:|---:|---:|---:|---:|---:|")
        growth = {}
        for L in args.lengths:
            t = _time_interleaved({"ours_fast": _workload("ours_fast", b, L)}, max(2, args.reps // 2))["ours_fast"]
            m = _memory("ours_fast", b, L, args.threads)
            growth[L] = {**t, **m}
            print(f"| {L} | {_fmt_t(t['fwd'])} | {_fmt_t(t['fwd_bwd'])} | {1e6 * t['fwd_bwd'][1] / (b * L):.1f} | "
                  f"{m['fwd_mb']:.0f} | {m['fwd_bwd_mb']:.0f} |")
        results["lengths"] = growth
    load1 = os.getloadavg()
    results["load_end"] = load1
    print(f"\nLoad average at end {load1[0]:.2f}. Times: median (min) of {args.reps} interleaved repeats after a "
          f"warm-up. Peak MB: growth of the resident high-water mark, fresh subprocess per configuration.")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)


if __name__ == "__main__":
    main()
