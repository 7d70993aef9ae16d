"""Evaluation: strict accuracy per length bin, Dyck close accuracy, flip-flop read errors.

Metrics (README: task and metrics), all computed from a model's logits over the shared vocabulary by
:mod:`hooks.metrics` (their one home, with the definitions and the two decodings): strict and position
accuracy; Dyck(K, h) close accuracy; flip-flop glitch rate (sequences with any wrong read) and read
error rate (wrong reads / reads). :func:`evaluate_strings` runs a model over strings in batches and
pools the counts with :class:`hooks.metrics.MetricAccumulator`.

CLI::

    python -m trained_models.evaluate --model dyck8-10-mamba-2l --min-len 701 --max-len 1400 --n 500
    python -m trained_models.evaluate --model construction:dyck --language dyck --K 8 --h 10 --json
    python -m trained_models.evaluate --model parity-mamba-signed --held-out-bin0
    python -m trained_models.evaluate --model runs/suite/medium/d12/mamba-2l --paper-data PATH_TO_ssm_expressivity

``--paper-data`` scores the model on the paper's *stored* test strings of its language (every stored bin;
:func:`languages.paper.stored_split`) instead of freshly sampled ones: the paper's generators draw strings
unlike our sampler does (``results/paper_data.md``), so the two show how much a number owes to the data.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from hooks.metrics import CLOSE_THRESHOLD, SOFTMAX_THRESHOLD, MetricAccumulator, describe, output_probs  # noqa: F401 (re-exported)
from hooks.metrics import strict_correct
import languages
from languages import cli
from languages.base import check_fits
from languages.datasets import Vocab, encode_batch, make_splits
from languages.paper import STORED_DIRS, stored_test_bins
from trained_models.config import TrainConfig, make_data
from trained_models.registry import load, load_any


@dataclass
class TorchBatch:
    """A :class:`languages.datasets.Batch` moved to torch (the fields the metrics need)."""

    tokens: torch.Tensor  # [B, L] int64
    mask: torch.Tensor  # [B, L] bool
    allowed: torch.Tensor  # [B, L, V] bool
    next_tokens: torch.Tensor  # [B, L] int64
    strings: list

    @classmethod
    def from_batch(cls, batch: Any) -> "TorchBatch":
        return cls(
            tokens=torch.as_tensor(np.asarray(batch.tokens), dtype=torch.long),
            mask=torch.as_tensor(np.asarray(batch.mask), dtype=torch.bool),
            allowed=torch.as_tensor(np.asarray(batch.allowed), dtype=torch.bool),
            next_tokens=torch.as_tensor(np.asarray(batch.next_tokens), dtype=torch.long),
            strings=list(batch.strings),
        )


def iter_batches(strings: Sequence[str], batch_size: int, sort: bool = True) -> Iterable[list[str]]:
    order = sorted(range(len(strings)), key=lambda i: len(strings[i])) if sort else range(len(strings))
    order = list(order)
    for k in range(0, len(order), batch_size):
        yield [strings[i] for i in order[k : k + batch_size]]


@torch.no_grad()
def evaluate_strings(
    model: torch.nn.Module,
    language: Any,
    strings: Sequence[str],
    *,
    decode: str = "sigmoid",
    batch_size: int = 32,
    vocab: Any = None,
) -> dict[str, Any]:
    """All metrics of ``model`` on ``strings`` (member strings of ``language``)."""
    if not strings:
        raise ValueError("no strings to evaluate")
    vocab = vocab or Vocab(language.alphabet)
    acc = MetricAccumulator(language, vocab, decode)
    was_training = model.training
    model.eval()
    try:
        for chunk in iter_batches(list(strings), batch_size):
            tb = TorchBatch.from_batch(encode_batch(language, chunk, vocab))
            acc.update(_logits(model(tb.tokens)), tb)
    finally:
        model.train(was_training)
    return acc.result()


@torch.no_grad()
def strict_per_string(model: torch.nn.Module, language: Any, strings: Sequence[str], *, decode: str = "sigmoid",
                      batch_size: int = 64, vocab: Any = None) -> np.ndarray:
    """Per string, in the given order: is the allowed-next set right at every position? (Its mean is
    :func:`evaluate_strings`' strict accuracy; this keeps which strings failed, to break a score down.)"""
    vocab = vocab or Vocab(language.alphabet)
    out = np.zeros(len(strings), dtype=bool)
    was_training = model.training
    model.eval()
    try:
        for k in range(0, len(strings), batch_size):
            tb = TorchBatch.from_batch(encode_batch(language, list(strings[k:k + batch_size]), vocab))
            out[k:k + batch_size] = strict_correct(_logits(model(tb.tokens)), tb, decode).numpy()
    finally:
        model.train(was_training)
    return out


def _logits(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


# --------------------------------------------------------------------------- held-out re-measurement


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion ``k / n``."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def ratio_interval(correct: Sequence[int], total: Sequence[int], z: float = 1.96) -> tuple[float, float]:
    """95% interval of a pooled ratio ``sum(correct) / sum(total)`` over clusters (groups of strings),
    from the ratio estimator's cluster variance (positions within a string are not independent)."""
    c, t = np.asarray(correct, float), np.asarray(total, float)
    k = len(t)
    if k < 2 or t.sum() <= 0:
        raise ValueError("need at least two clusters with positions")
    r = c.sum() / t.sum()
    se = math.sqrt(((c - r * t) ** 2).sum() / (k * (k - 1))) / t.mean()
    return max(0.0, r - z * se), min(1.0, r + z * se)


def _legacy_sizes(language: Any, window: tuple[int, int], n_train: int, n_bin0: int) -> tuple[int, int]:
    """Train and bin0 sizes of a run made before the dev split existed: a window holding fewer strings
    than asked was shared in proportion to the requests (the rest in order, train first)."""
    N = language.count_window(*window)
    want = n_train + n_bin0
    if N is None or want <= N:
        return n_train, n_bin0
    tr, b0 = n_train * N // want, n_bin0 * N // want
    b0 = b0 or (1 if n_bin0 and tr + b0 < N else 0)
    left = N - tr - b0
    extra = min(left, n_train - tr)
    return tr + extra, b0 + min(left - extra, n_bin0 - b0)


def held_out_bin0(card: dict[str, Any], language: Any) -> dict[str, Any]:
    """bin0 strings of a trained model that are in neither its training set nor its dev set.

    A card with a ``dev`` record (dev drawn from the training window, disjoint from every test bin)
    was already tested on such strings: its own bin0. An older card (``dev`` a sentence) chose its
    checkpoint on the first ``n_dev`` of its ``n_test`` bin0 strings; its splits are rebuilt exactly
    (``make_splits`` with the card's windows, seed and the then sizes: ``max(n_dev, n_test)`` bin0
    strings) and the held-out set is bin0 without those ``n_dev`` strings, topped up to ``n_test``
    with fresh window strings outside train and bin0 where the window holds them.
    Returns ``{"shared", "dev", "fresh", "note"}``: the card's figure was measured on ``dev + shared``,
    the held-out set is ``shared + fresh``.
    """
    tc = card["train_config"]
    window = tuple(card["train_window"])
    bin0_w = tuple(card["test_windows"].get("bin0", window))
    n_dev, n_test, seed = int(tc["n_dev"]), int(tc["n_test"]), tc["seed"]
    if isinstance(card.get("dev"), dict):
        sp = make_data(TrainConfig.from_dict(tc), language)
        return {"shared": sp["bin0"][:n_test], "dev": [], "fresh": [],
                "note": "the card's own bin0 (its dev set is a separate split)"}
    n_tr, n_b0 = _legacy_sizes(language, window, int(tc["n_train"]), max(n_dev, n_test))
    sp = make_splits(language, n_tr, n_b0, seed, bins={"train": window, "bin0": bin0_w})
    kept = sp["bin0"][n_dev:n_test]
    room = language.count_window(*bin0_w)
    room = None if room is None else room - sum(1 for x in sp["train"] + sp["bin0"] if bin0_w[0] <= len(x) <= bin0_w[1])
    extra = n_test - len(kept) if room is None else min(n_test - len(kept), room)
    fresh = language.sample(extra, *bin0_w, seed=f"{seed}/held-out", exclude=set(sp["train"]) | set(sp["bin0"]),
                            _exclude_are_members=True) if extra > 0 else []
    return {"shared": kept, "dev": sp["bin0"][:min(n_dev, n_test)], "fresh": fresh,
            "note": f"bin0 without its first {n_dev} strings (the dev set) plus {len(fresh)} fresh strings "
                    f"outside train and bin0"}


_COUNTS = {"strict_accuracy": ("n", "n"), "glitch_rate": ("n", "n"), "close_accuracy": ("close_positions",) * 2}


def remeasure_bin0(name_or_dir: str, cluster: int = 8) -> dict[str, Any]:
    """A model's bin0 figure on strings disjoint from its train and dev sets, with a 95% interval, beside
    the card's figure and that figure recomputed on its own strings (a check of the rebuilt splits).

    Every string is evaluated once, in clusters of ``cluster`` strings; a figure pools its clusters'
    counts. The interval is Wilson's for the per-string proportions (strict accuracy, glitch rate)
    and the cluster (ratio-estimator) interval for Dyck's close accuracy, which pools positions that are
    not independent within a string.
    """
    model, card = load(name_or_dir)
    lang = languages.get(card["language"]["name"], **card["language"].get("params", {}))
    decode = card.get("decode", "sigmoid")
    h = held_out_bin0(card, lang)
    m0 = card["metrics"]["bin0"]
    if "read_error_rate" in m0 and "glitch_rate" not in m0:  # a card written before the names were settled
        m0 = dict(m0, glitch_rate=m0["read_error_rate"])  # its read_error_rate counted sequences
    key = next(k for k in ("close_accuracy", "glitch_rate", "strict_accuracy") if k in m0)
    size = _COUNTS[key][0]
    parts: dict[str, list[tuple[int, int]]] = {}
    for group in ("shared", "dev", "fresh"):
        strings = h[group]
        parts[group] = []
        for i in range(0, len(strings), cluster):
            r = evaluate_strings(model, lang, strings[i:i + cluster], decode=decode, batch_size=cluster)
            parts[group].append((round(r[key] * r[size]), r[size]))

    def pooled(groups):
        c = [x for g in groups for x in parts[g]]
        return sum(a for a, _ in c) / max(1, sum(b for _, b in c)), c

    redo, _ = pooled(("dev", "shared"))
    new, clusters = pooled(("shared", "fresh"))
    if key == "close_accuracy":
        ci = ratio_interval([a for a, _ in clusters], [b for _, b in clusters])
    else:
        ci = wilson_interval(sum(a for a, _ in clusters), sum(b for _, b in clusters))
    return {"model": str(name_or_dir), "metric": key, "card": m0[key], "card_n": m0["n"], "recomputed": redo,
            "held_out": new, "held_out_n": len(h["shared"]) + len(h["fresh"]), "ci95": list(ci),
            "moved": not ci[0] <= m0[key] <= ci[1], "note": h["note"]}


# --------------------------------------------------------------------------- CLI


def _language_from_args(args: argparse.Namespace, card: Optional[dict]) -> Any:
    """The language to evaluate on: ``--language`` (with ``--K/--h/--p``), else the card's. Parameters
    without ``--language`` and a language whose alphabet is not the model's are refused."""
    given = [f"--{k} {getattr(args, k)}" for k in ("K", "h", "p") if getattr(args, k) is not None]
    if args.language:
        params = {k: getattr(args, k) for k in ("K", "h") if getattr(args, k) is not None}
        if args.p is not None:
            params["p"] = args.p[0] if len(args.p) == 1 else list(args.p)
        language = languages.get(args.language, **params)
    elif card is None:
        raise cli.UsageError("--language is required when --model is not a shipped model or run directory")
    else:
        if given:
            raise cli.UsageError(f"{', '.join(given)} given without --language: they would be ignored (the model "
                                 f"card's language is used); add --language {card['language']['name']}")
        return languages.get(card["language"]["name"], **(card["language"].get("params") or {}))
    if card is not None:
        trained = languages.get(card["language"]["name"], **(card["language"].get("params") or {}))
        if tuple(language.alphabet) != tuple(trained.alphabet):
            raise cli.UsageError(
                f"--language {args.language}{' ' + ' '.join(given) if given else ''}: the model was trained on "
                f"{trained.name} {trained.params or ''} over the alphabet {''.join(trained.alphabet)!r}, not "
                f"{''.join(language.alphabet)!r}")
    return language


def own_splits(card: Optional[dict[str, Any]], language: Any) -> dict[str, list[str]]:
    """A trained model's splits (train, dev, test bins), rebuilt from the training config its card saved
    (training draws them deterministically from it; a run on the paper's data reads them again). The test
    bins are cut to ``n_test`` strings, as training scored them."""
    if not card or not isinstance(card.get("train_config"), dict):
        raise cli.UsageError("--own-split needs a trained model whose card holds its train_config")
    cfg = TrainConfig.from_dict(card["train_config"])
    sp = make_data(cfg, language)
    return {k: (v if k in ("train", "dev") else v[:cfg.n_test]) for k, v in sp.items()}


def stored_bins(repo: str, language: Any) -> dict[str, list[str]]:
    """The paper's stored test bins of ``language`` that a run reports (:func:`languages.paper.stored_test_bins`,
    the same bins ``train --paper-data`` scores). A stored string that is not a member of ours is an error that
    names it (the paper's data are all members: ``results/paper_data.md``)."""
    if language.name not in STORED_DIRS:
        raise cli.UsageError(f"--paper-data: the paper stores no data for {language.name}")
    return stored_test_bins(repo, language)


def _windows(args: argparse.Namespace, language: Any) -> dict[str, tuple[int, int]]:
    if args.min_len is not None or args.max_len is not None:
        if args.min_len is None or args.max_len is None:
            raise cli.UsageError("--min-len and --max-len go together")
        if args.min_len > args.max_len:
            raise cli.UsageError(f"--min-len {args.min_len} is above --max-len {args.max_len}")
        return {"custom": (args.min_len, args.max_len)}
    bins = dict(getattr(language, "default_bins", {}) or {})
    bins.pop("train", None)
    if not bins:
        raise cli.UsageError(f"{language.name} has no default bins: pass --min-len and --max-len")
    return {k: tuple(v) for k, v in bins.items()}


@cli.cli("python -m trained_models.evaluate")
def main(argv: Optional[list[str]] = None) -> int:
    ap = cli.ArgumentParser(prog="python -m trained_models.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="shipped name, run directory, or construction:NAME")
    ap.add_argument("--language", help="language name (default: the model card's)")
    ap.add_argument("--K", type=cli.positive_int, help="Dyck(K, h): bracket types (needs --language)")
    ap.add_argument("--h", type=cli.positive_int, help="Dyck(K, h): maximal depth (needs --language)")
    ap.add_argument("--p", type=cli.probability, nargs="+",
                    help="flip-flop: probability of the ignore instruction (several: a mixture; needs --language)")
    ap.add_argument("--min-len", type=cli.nonnegative_int)
    ap.add_argument("--max-len", type=cli.nonnegative_int)
    ap.add_argument("--n", type=cli.positive_int, default=500, help="strings per bin")
    ap.add_argument("--seed", type=cli.nonnegative_int, default=12345)
    ap.add_argument("--batch-size", type=cli.positive_int, default=32)
    ap.add_argument("--no-verify", action="store_true",
                    help="load weights whose sha256 differs from the card's, or that hold NaN/inf (edited on purpose)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--paper-data", metavar="REPO",
                    help="score on the paper's stored test bins of the language (REPO: a clone or mirror of "
                         "lacoco-lab/ssm_expressivity) instead of sampled strings")
    ap.add_argument("--own-split", nargs="+", metavar="SPLIT",
                    help="score a trained run on its own splits, rebuilt from its saved config (train, dev, bin0, "
                         "...): e.g. whether it fits its training strings at all")
    ap.add_argument("--held-out-bin0", action="store_true",
                    help="re-measure a trained model's bin0 on strings outside its train and dev sets "
                         "(rebuilt from its card), with a 95%% interval, beside the card's figure")
    args = ap.parse_args(argv)

    if args.held_out_bin0:
        if args.paper_data or args.own_split:
            raise cli.UsageError("--held-out-bin0 takes its own strings: not with --paper-data or --own-split")
        r = remeasure_bin0(args.model)
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{r['model']}: bin0 {r['metric']} card {r['card']:.4f} (n={r['card_n']}; recomputed "
                  f"{r['recomputed']:.4f}), held out {r['held_out']:.4f} (n={r['held_out_n']}, 95% "
                  f"[{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]){' MOVED' if r['moved'] else ''}; {r['note']}")
        return 0

    try:
        model, card = load_any(args.model, language=args.language, K=args.K, h=args.h, verify=not args.no_verify)
    except (OSError, ValueError, KeyError) as e:
        raise cli.UsageError(f"--model {args.model}: {cli.one_line(e)}") from e
    language = _language_from_args(args, card)
    decode = (card or {}).get("decode", "sigmoid")
    results: dict[str, Any] = {}
    if args.own_split:
        if args.paper_data or args.min_len is not None or args.max_len is not None:
            raise cli.UsageError("--own-split takes the run's own strings: not with --paper-data or --min-len/--max-len")
        splits = own_splits(card, language)
        for name in args.own_split:
            if name not in splits:
                raise cli.UsageError(f"--own-split {name}: the run has the splits {', '.join(splits)}")
            results[name] = evaluate_strings(model, language, splits[name], decode=decode, batch_size=args.batch_size)
    elif args.paper_data:
        for name, strings in stored_bins(args.paper_data, language).items():
            results[name] = evaluate_strings(model, language, strings, decode=decode, batch_size=args.batch_size)
    else:
        windows = _windows(args, language)
        for lo, hi in windows.values():
            check_fits(args.n, lo, hi, what="--n")
        for name, (lo, hi) in windows.items():
            strings = language.sample(args.n, lo, hi, seed=args.seed)
            results[name] = evaluate_strings(model, language, strings, decode=decode, batch_size=args.batch_size)
    if language.name == "flipflop" and args.min_len is None:
        for p in (0.8, 0.98):
            lang = languages.get("flipflop", p=p)
            strings = lang.sample(args.n, 512, 512, seed=args.seed)
            results[f"ffl{p}"] = evaluate_strings(model, lang, strings, decode=decode, batch_size=args.batch_size)

    if args.json:
        payload = next(iter(results.values())) if len(results) == 1 else {"bins": results}
        if len(results) > 1:
            first = next(iter(results.values()))
            payload.update({k: first[k] for k in ("strict_accuracy", "n", "min_len", "max_len")})
            for key in ("close_accuracy", "glitch_rate", "read_error_rate"):
                if key in first:
                    payload[key] = first[key]
        json.dump(payload, sys.stdout)
        print()
    else:
        print(f"model {args.model} on {language.name}{' ' + str(language.params) if language.params else ''}")
        for name, r in results.items():
            print(f"  {name:>8} len {r['min_len']}-{r['max_len']} n={r['n']}: {describe(r)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
