"""Strict (and Dyck close) accuracy of a construction on sampled member strings.

    python -m hooks.constructions --language dyck --K 8 --h 10 --min-len 701 --max-len 1400 --n 200 --seed 0
    python -m hooks.constructions --language anbn --min-len 2000 --max-len 2000 --n 1 --json
    python -m hooks.constructions --language dyck --model mamba --min-len 7000 --max-len 7000 --n 20

``--model mamba`` evaluates the HookedMamba realizations (:mod:`hooks.constructions.as_mamba`), ``--model
mamba2`` the HookedMamba2 ones (:mod:`hooks.constructions.as_mamba2`).

Targets come from ``Language.allowed_next`` (for ``parity`` that is the membership target: both symbols
always, END iff the prefix has an even number of 1s). ``--json`` prints one object with the keys
``strict_accuracy``, ``close_accuracy`` (Dyck only), ``n``, ``min_len``, ``max_len`` (and ``language``,
``state_sizes``, ``dtype``, ``seed``, ``seconds``).
"""
from __future__ import annotations

import json
import sys
import time
from typing import Optional

import torch

from hooks import metrics
from hooks.constructions import LANGUAGES, batch_for, build
from hooks.constructions.as_mamba import dyck_mamba, flipflop_mamba
from hooks.constructions.as_mamba2 import dyck_mamba2, flipflop_mamba2
from languages import cli
from languages.base import check_fits


def evaluate(construction, strings, batch_size: int = 32) -> dict:
    """Strict accuracy (and close accuracy for Dyck) of ``construction`` on member ``strings``, counted
    by :class:`hooks.metrics.MetricAccumulator` (``sigmoid`` decoding: the constructions' logits are
    ``±LOGIT``)."""
    lang, vocab, model = construction.language, construction.vocab, construction.model
    acc = metrics.MetricAccumulator(lang, vocab)
    order = sorted(range(len(strings)), key=lambda i: len(strings[i]))
    with torch.no_grad():
        for k in range(0, len(order), batch_size):
            batch = batch_for(lang, vocab, [strings[i] for i in order[k : k + batch_size]])
            acc.update(model(batch.tokens), batch)
    out = {"strict_accuracy": acc.result()["strict_accuracy"]}
    if acc.close_ids is not None:
        out["close_accuracy"] = acc.close_correct / acc.close_total if acc.close_total else float("nan")
    return out


@cli.cli("python -m hooks.constructions")
def main(argv: Optional[list[str]] = None) -> int:
    ap = cli.ArgumentParser(prog="python -m hooks.constructions", description=__doc__.split("\n")[0])
    ap.add_argument("--language", required=True, choices=LANGUAGES)
    ap.add_argument("--K", type=cli.positive_int, default=8, help="Dyck(K, h): bracket types")
    ap.add_argument("--h", type=cli.positive_int, default=10, help="Dyck(K, h): maximal depth")
    ap.add_argument("--p", type=cli.probability, default=0.8, help="flip-flop: probability of the ignore instruction")
    ap.add_argument("--min-len", type=cli.nonnegative_int, required=True)
    ap.add_argument("--max-len", type=cli.nonnegative_int, required=True)
    ap.add_argument("--n", type=cli.positive_int, default=200)
    ap.add_argument("--seed", type=cli.nonnegative_int, default=0)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--model", choices=("diagonal", "mamba", "mamba2"), default="diagonal",
                    help="mamba / mamba2: the HookedMamba / HookedMamba2 realization (flipflop and dyck only; float32)")
    ap.add_argument("--batch-size", type=cli.positive_int, default=32)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.min_len > args.max_len:
        raise cli.UsageError(f"--min-len {args.min_len} is above --max-len {args.max_len}")
    check_fits(args.n, args.min_len, args.max_len, what="--n")

    if args.model in ("mamba", "mamba2"):
        dyck_fn, flipflop_fn = (dyck_mamba, flipflop_mamba) if args.model == "mamba" else (dyck_mamba2, flipflop_mamba2)
        if args.language == "dyck":
            c = dyck_fn(args.K, args.h)
        elif args.language == "flipflop":
            c = flipflop_fn(args.p)
        else:
            ap.error(f"--model {args.model} exists for flipflop and dyck only")
        if args.dtype != "float32":
            c.model.to(getattr(torch, args.dtype))
    else:
        c = build(args.language, K=args.K, h=args.h, p=args.p, dtype=args.dtype)
    t0 = time.perf_counter()
    strings = c.language.sample(args.n, args.min_len, args.max_len, seed=args.seed)
    res = evaluate(c, strings, args.batch_size)
    res.update(n=len(strings), min_len=args.min_len, max_len=args.max_len,
               lengths=[min(map(len, strings)), max(map(len, strings))])
    res.update(language=args.language, model=args.model, state_sizes=list(c.state_sizes), dtype=args.dtype,
               seed=args.seed,
               seconds=round(time.perf_counter() - t0, 2))
    if args.json:
        json.dump(res, sys.stdout)
        print()
    else:
        print(f"{c!r} on {args.language}: n={res['n']} lengths {res['lengths'][0]}-{res['lengths'][1]}: "
              f"{metrics.describe(res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
