"""Character-prediction training on the formal languages (the allowed next-symbol sets), for Mamba and Transformers.

::

    python -m trained_models.train --language dyck --K 8 --h 10 --model mamba --layers 2 \\
        --d-model 32 --seed 0 --out runs/dyck-mamba-2l

Objective: at every position the model outputs, per symbol (END included), whether it may follow
the prefix read so far; ``--loss bce`` (default) fits these allowed-next sets with a sigmoid per
symbol (Bhattamishra et al.); ``--loss lm`` is next-symbol cross-entropy on member strings.
Optimiser AdamW with linear warm-up then cosine decay; gradient clipping; length-bucketed batches
(strings sorted by length, so a batch pads little); evaluation on the held-out in-distribution bin
(``--n-dev`` strings of the training window drawn after train and every test bin, so disjoint from
all of them) ``--evals-per-epoch`` times an epoch; the best weights are
kept (on a tie, the later ones); early stopping after ``--patience`` evaluations without improvement
or once ``--target`` is reached. The selection metric is close accuracy for Dyck(K, h), one minus the read-error rate for
flip-flop, strict accuracy otherwise.

Every evaluation writes the best model + card and a resumable checkpoint atomically (the checkpoint's
model, optimiser and state as one directory); ``--resume`` continues an interrupted run exactly (same
data order, optimiser and schedule state). ``--max-minutes`` stops cleanly at a wall-clock budget of
this invocation (``--max-cpu-minutes``: at a budget of this process's CPU time, which the machine's load
does not change) (each ``--resume`` gets a new one) so a run can span several sessions; the best
weights so far (the last ones if none was evaluated yet) are then evaluated and written with a
loadable card marked ``"finished": false``. An ``--out`` folder that already holds a run is refused
unless ``--resume`` (continue it) or ``--force`` (start over, deleting it); every argument is checked
before anything is written. Deterministic for a seed on CPU.

This module is the command line; the loop is :mod:`trained_models.training`, the loss, schedule and
parameter groups :mod:`trained_models.objective`, the run folder and its checkpoint
:mod:`trained_models.run_folder`.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Optional

import languages
from languages import cli
from trained_models.config import TrainConfig
from trained_models.training import train


def build_parser() -> argparse.ArgumentParser:
    ap = cli.ArgumentParser(prog="python -m trained_models.train", description=__doc__.split("\n")[0],
                            epilog="languages: " + ", ".join(languages.names()))
    ap.add_argument("--language", required=True, choices=languages.names(), metavar="LANGUAGE",
                    help="one of the languages listed below")
    ap.add_argument("--K", type=cli.positive_int, help="Dyck(K, h): bracket types")
    ap.add_argument("--h", type=cli.positive_int, help="Dyck(K, h): maximal depth")
    ap.add_argument("--p", type=cli.probability, nargs="+",
                    help="flip-flop: probability of the ignore instruction (several: a mixture, one p drawn per "
                         "string); boolean3/5: the sampler's operator probability")
    ap.add_argument("--targets", choices=languages.TARGETS,
                    help="tomita3, zot: 'paper' trains on the original repository's per-position targets, which "
                         "differ from the exact allowed-next sets (default 'correct'; see languages.regular)")
    ap.add_argument("--model", choices=("mamba", "mamba2", "transformer"), default="mamba")
    ap.add_argument("--layers", type=cli.positive_int, default=2)
    ap.add_argument("--d-model", type=cli.positive_int, default=32)
    ap.add_argument("--d-state", type=cli.positive_int, default=16)
    ap.add_argument("--expand", type=cli.positive_int, default=2)
    ap.add_argument("--gate", choices=("nonnegative", "signed", "time_invariant"), default="nonnegative")
    ap.add_argument("--headdim", type=cli.positive_int, default=16,
                    help="Mamba-2: channels per head (heads = expand * d_model / headdim)")
    ap.add_argument("--dt-init", type=cli.positive_float, nargs=2, metavar=("MIN", "MAX"),
                    help="Mamba: initial step sizes drawn log-uniformly in [MIN, MAX] (default 0.001 0.1); "
                         "smaller steps start with longer memory")
    ap.add_argument("--n-heads", type=cli.positive_int, default=4)
    ap.add_argument("--pos-encoding", choices=("learned", "sinusoidal", "none"), default="learned")
    ap.add_argument("--loss", choices=("bce", "lm", "bce+lm"), default="bce")
    ap.add_argument("--lr", type=cli.positive_float, default=1e-3)
    ap.add_argument("--weight-decay", type=cli.nonnegative_float, default=0.1)
    ap.add_argument("--decay", choices=("all", "matrices"), default="all",
                    help="which parameters AdamW decays: all (default) or weight matrices only "
                         "(not A_log, D, biases, norms)")
    ap.add_argument("--batch-size", type=cli.positive_int, default=32)
    ap.add_argument("--epochs", type=cli.positive_int, default=20)
    ap.add_argument("--max-steps", type=cli.positive_int, help="stop after this many steps (default: --epochs)")
    ap.add_argument("--max-minutes", type=cli.positive_float,
                    help="wall-clock budget of this invocation (each --resume gets a new one); when it runs out, "
                         "the best weights so far are evaluated and written with a loadable card, and --resume "
                         "continues the run")
    ap.add_argument("--max-cpu-minutes", type=cli.positive_float,
                    help="the same, counted in CPU time of this process (all its threads) instead of wall "
                         "clock: where the run stops does not depend on what else the machine runs")
    ap.add_argument("--warmup-steps", type=cli.nonnegative_int, default=100)
    ap.add_argument("--patience", type=cli.positive_int, default=4)
    ap.add_argument("--target", type=cli.probability, help="stop once the dev selection metric reaches this")
    ap.add_argument("--evals-per-epoch", type=cli.positive_int, default=1)
    ap.add_argument("--n-train", type=cli.positive_int, default=10_000)
    ap.add_argument("--n-dev", type=cli.positive_int, default=500,
                    help="early-stopping strings, drawn last from the training window: in no other split")
    ap.add_argument("--n-test", type=cli.positive_int, default=500)
    ap.add_argument("--min-len", type=cli.nonnegative_int, help="training window (default: the language's)")
    ap.add_argument("--max-len", type=cli.nonnegative_int)
    ap.add_argument("--test-window", action="append", default=[], metavar="NAME=MIN:MAX",
                    help="an evaluation bin, e.g. bin1=701:1400 (repeatable; default: the language's bins)")
    ap.add_argument("--seed", type=cli.nonnegative_int, default=0)
    ap.add_argument("--threads", type=cli.positive_int, default=2)
    ap.add_argument("--out", required=True, type=cli.out_dir,
                    help="run folder; refused if it holds a run, unless --resume or --force")
    ap.add_argument("--paper-data", metavar="REPO",
                    help="train, stop early and test on the paper's stored strings of the language (REPO: a clone "
                         "or mirror of lacoco-lab/ssm_expressivity) instead of sampled ones; sizes capped by "
                         "--n-train/--n-dev/--n-test; the stored strings fix the windows (--min-len/--max-len/"
                         "--test-window, if given, must be the language's own)")
    ap.add_argument("--init-from", metavar="RUN_OR_NAME",
                    help="start from these weights (a run directory or a shipped name; same architecture), "
                         "with a fresh optimiser and schedule: e.g. fine-tune on longer strings")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out (or start it if absent)")
    ap.add_argument("--force", action="store_true", help="delete the run in --out and start over")
    ap.add_argument("--finish", action="store_true",
                    help="with --resume: stop an interrupted run now and evaluate its best weights")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    params = {k: getattr(args, k) for k in ("K", "h") if getattr(args, k) is not None}
    if args.p is not None:
        params["p"] = args.p[0] if len(args.p) == 1 else list(args.p)
    if args.targets is not None:
        if args.language not in languages.WITH_PAPER_TARGETS:
            raise cli.UsageError(f"--targets applies to {', '.join(languages.WITH_PAPER_TARGETS)} only (the languages "
                                 f"whose original targets differ from ours), not --language {args.language}")
        params["targets"] = args.targets
    window = None
    if args.min_len is not None or args.max_len is not None:
        if args.min_len is None or args.max_len is None:
            raise cli.UsageError("--min-len and --max-len go together")
        if args.min_len > args.max_len:
            raise cli.UsageError(f"--min-len {args.min_len} is above --max-len {args.max_len}")
        window = (args.min_len, args.max_len)
    tests = None
    if args.test_window:
        tests = {}
        for item in args.test_window:
            try:
                name, rng = item.split("=")
                lo, hi = rng.split(":")
                tests[name] = (int(lo), int(hi))
            except ValueError:
                raise cli.UsageError(f"--test-window expects NAME=MIN:MAX, got {item!r}") from None
            if not name or not 0 <= tests[name][0] <= tests[name][1]:
                raise cli.UsageError(f"--test-window needs a name and 0 <= MIN <= MAX, got {item!r}")
    return TrainConfig(
        language=args.language, language_params=params, model=args.model, layers=args.layers,
        d_model=args.d_model, d_state=args.d_state, expand=args.expand, gate=args.gate, headdim=args.headdim,
        dt_init=tuple(args.dt_init) if args.dt_init else None, init_from=args.init_from, paper_data=args.paper_data,
        n_heads=args.n_heads, pos_encoding=args.pos_encoding, seed=args.seed, loss=args.loss, lr=args.lr,
        weight_decay=args.weight_decay, decay=args.decay, batch_size=args.batch_size, epochs=args.epochs,
        max_steps=args.max_steps, max_minutes=args.max_minutes, max_cpu_minutes=args.max_cpu_minutes, warmup_steps=args.warmup_steps,
        patience=args.patience, target=args.target, evals_per_epoch=args.evals_per_epoch,
        n_train=args.n_train, n_dev=args.n_dev, n_test=args.n_test, train_window=window,
        test_windows=tests, threads=args.threads,
    )


@cli.cli("python -m trained_models.train")
def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.finish and not args.resume:
        raise cli.UsageError("--finish needs --resume (it ends an interrupted run)")
    cfg = config_from_args(args)
    argv = [a for a in argv if a != cli.DEBUG_FLAG]
    command = "python -m trained_models.train " + " ".join(shlex.quote(a) for a in argv)
    card = train(cfg, args.out, resume=args.resume, command=command, progress=not args.no_progress,
                 finish=args.finish, force=args.force)
    print(json.dumps({"out": args.out, "best_dev": card["best_dev"], "steps": card["steps"],
                      "train_seconds": card["train_seconds"], "stop_reason": card["stop_reason"],
                      "finished": card["finished"], "metrics": card["metrics"]}, indent=2))
    if not card["finished"]:
        again = [a for a in argv if a not in ("--force", "--resume")] + ["--resume"]
        print(f"stopped by its time budget ({card['stop_reason']}) at step {card['steps']}; {args.out} holds the best weights so far, "
              f"evaluated. Continue with: python -m trained_models.train {' '.join(shlex.quote(a) for a in again)}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
