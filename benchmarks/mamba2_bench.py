"""Speed of HookedMamba2 against Hugging Face ``Mamba2ForCausalLM``'s torch path (a benchmark, not a test).

Run: ``python -m benchmarks.mamba2_bench`` (``--help`` for options). Prints a markdown table and the ratios.

Whole model, batch 32, length 512, d_model 64, 2 layers, d_state 16, headdim 16 (8 heads), 1 group,
vocab 16, float32 CPU, the same weights for all:

* forward+backward: HookedMamba2 with the chunked scan (chunks of 32, its default), with the sequential
  reference scan, and HF's torch path (``Mamba2ForCausalLM``, ``use_cache=False``; no ``mamba_ssm`` /
  ``causal_conv1d`` kernels on CPU) at chunk sizes 32, 64 and 256 (HF's default);
* forward only: HookedMamba2 uncached, and with every layer's ``hook_ssm_state`` [B, L, H, P, N] cached by
  ``run_with_cache`` (the per-step states are then written by ``hooks.ssd.ssd_states``; the outputs still
  come from the chunked scan).

Ratios: HF at its fastest chunk size and at its default (256) over ours (fwd+bwd; goal >= 3x), cached over
uncached forward (goal <= 1.5x). The two models do the same work outside the scan (projections, conv, norms,
head), which bounds the whole-model ratio: the scan alone is timed too (``hooks.ssd.ssd_scan`` against HF's
``mamba2_chunk_scan``, same inputs, fwd+bwd), and the bound printed is HF's fwd+bwd over ours minus our scans
(the ratio if our scan cost nothing).
Times: minimum and median of ``--reps`` repeats after a warm-up, configurations interleaved round-robin so
that load from other processes on the shared machine spreads over all of them (the load average is
printed). ``OMP_WAIT_POLICY=PASSIVE`` unless set (see :mod:`benchmarks.scan_bench`).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hooks import ssd  # noqa: E402
from hooks.mamba2 import HookedMamba2, Mamba2Config  # noqa: E402

SHAPE = dict(batch=32, length=512, d_model=64, n_layers=2, d_state=16, headdim=16, vocab=16)


def _models(chunk: int):
    from transformers.utils import logging as hf_logging  # the peer: optional (the bench extra)

    hf_logging.set_verbosity_error()
    s = SHAPE
    ours = HookedMamba2(Mamba2Config(d_model=s["d_model"], n_layers=s["n_layers"], vocab_size=s["vocab"],
                                     d_state=s["d_state"], headdim=s["headdim"], chunk_size=chunk), seed=0)
    seq = HookedMamba2({**ours.cfg.to_dict(), "scan": "sequential"})
    seq.load_state_dict(ours.state_dict())
    hf = {}
    for c in (32, 64, 256):
        ours.cfg.chunk_size = c
        hf[c] = ours.to_hf()
    ours.cfg.chunk_size = chunk
    return ours, seq, hf


def _scan_alone(which: str, chunk: int):
    """fwd+bwd of the scan alone on random inputs of the benchmark's shape (8 heads of 16, 1 group)."""
    from transformers.models.mamba2.modeling_mamba2 import mamba2_chunk_scan  # the peer: optional (the bench extra)

    s = SHAPE
    B, L, N, P = s["batch"], s["length"], s["d_state"], s["headdim"]
    H = 2 * s["d_model"] // P
    g = torch.Generator().manual_seed(1)
    x, dt = torch.randn(B, L, H, P, generator=g), torch.randn(B, L, H, generator=g)
    Bm, Cm = torch.randn(B, L, 1, N, generator=g), torch.randn(B, L, 1, N, generator=g)
    A, D, bias = -torch.rand(H, generator=g) - 0.1, torch.randn(H, generator=g), torch.zeros(H)
    for t in (x, dt, Bm, Cm, A, D, bias):
        t.requires_grad_()

    def run():
        if which == "ours":
            y = ssd.ssd_scan(x, F.softplus(dt + bias), A, Bm, Cm, D, None, "nonnegative", chunk=chunk)[0]
        else:
            y = mamba2_chunk_scan(x, dt, A, Bm, Cm, chunk_size=chunk, D=D, dt_bias=bias, dt_softplus=True)
        y.sum().backward()
    return run


def _fwd_bwd(fn):
    def run():
        fn().sum().backward()
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mamba2_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=32, help="HookedMamba2's chunk size")
    ap.add_argument("--no-sequential", action="store_true", help="skip the (slow) sequential reference")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ours, seq, hf = _models(args.chunk)
    s = SHAPE
    toks = torch.randint(0, s["vocab"], (s["batch"], s["length"]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((ours(toks) - hf[256](toks, use_cache=False).logits).abs().max())
    states = lambda name: name.endswith("hook_ssm_state")  # noqa: E731

    def cached():
        with torch.no_grad():
            return ours.run_with_cache(toks, names_filter=states)

    def uncached():
        with torch.no_grad():
            return ours(toks)

    rows = {
        "ours_fb": (f"HookedMamba2, chunked scan ({args.chunk}), fwd+bwd", _fwd_bwd(lambda: ours(toks))),
        **{f"hf{c}_fb": (f"HF Mamba2ForCausalLM torch path, chunk {c}, fwd+bwd",
                         _fwd_bwd(lambda c=c: hf[c](toks, use_cache=False).logits)) for c in (32, 64, 256)},
        "scan_ours": (f"scan alone: hooks.ssd.ssd_scan (chunk {args.chunk}), fwd+bwd", _scan_alone("ours", args.chunk)),
        **{f"scan_hf{c}": (f"scan alone: HF mamba2_chunk_scan (chunk {c}), fwd+bwd", _scan_alone("hf", c))
           for c in (32, 64, 256)},
        "ours_f": ("HookedMamba2 forward, uncached", uncached),
        "ours_f_cache": ("HookedMamba2 forward, every hook_ssm_state cached", cached),
    }
    if not args.no_sequential:
        rows["seq_fb"] = ("HookedMamba2, sequential reference scan, fwd+bwd", _fwd_bwd(lambda: seq(toks)))
    times = {k: [] for k in rows}
    for _, fn in rows.values():  # warm-up
        fn()
    for _ in range(args.reps):
        for k, (_, fn) in rows.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    load = os.getloadavg()
    print(f"B{s['batch']} L{s['length']} d_model {s['d_model']}, {s['n_layers']} layers, d_state {s['d_state']}, "
          f"headdim {s['headdim']}, torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; {args.reps} repeats")
    print(f"max |logit difference| ours vs HF: {diff:.2e}\n")
    print("| configuration | min s | median s |\n|---|---|---|")
    for k, (label, _) in rows.items():
        print(f"| {label} | {min(times[k]):.3f} | {statistics.median(times[k]):.3f} |")
    mn = {k: min(v) for k, v in times.items()}
    md = {k: statistics.median(v) for k, v in times.items()}
    hf_best = min(("hf32_fb", "hf64_fb", "hf256_fb"), key=lambda k: mn[k])
    for ref in (hf_best, "hf256_fb"):
        print(f"\nspeed-up over HF's torch path ({ref}), fwd+bwd: {mn[ref] / mn['ours_fb']:.2f}x (min), "
              f"{md[ref] / md['ours_fb']:.2f}x (median); goal >= 3x")
    scan_best = min(("scan_hf32", "scan_hf64", "scan_hf256"), key=lambda k: mn[k])
    print(f"scan alone, over HF's fastest ({scan_best}): {mn[scan_best] / mn['scan_ours']:.2f}x (min), "
          f"{md[scan_best] / md['scan_ours']:.2f}x (median)")
    rest = mn["ours_fb"] - s["n_layers"] * mn["scan_ours"]
    print(f"HookedMamba2 outside its scans (fwd+bwd minus {s['n_layers']} x the scan alone): {rest:.3f} s; "
          f"bound on the speed-up over {hf_best} with a free scan: {mn[hf_best] / rest:.2f}x")
    print(f"state cache cost, forward with every hook_ssm_state cached / uncached: "
          f"{mn['ours_f_cache'] / mn['ours_f']:.2f}x (min), {md['ours_f_cache'] / md['ours_f']:.2f}x (median); "
          f"goal <= 1.5x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
