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
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

import languages
from hooks.mamba import MambaConfig
from hooks.mamba2 import Mamba2Config
from hooks.transformer import TransformerConfig
from languages import cli
from languages.datasets import encode_batch
from languages.io import (atomic_save_safetensors, atomic_write_dir, atomic_write_json, check_writable,
                          recover_dir)
from languages.vocab import FIRST_OUTPUT_ID, Vocab
from trained_models.build import build_model
from trained_models.checkpoint import CARD, WEIGHTS, unique_state_dict, load_weights, save_model
from trained_models.config import BUDGET_STOPS, TrainConfig, make_data, resolve_windows  # noqa: F401 (make_data: re-exported)
from trained_models.evaluate import TorchBatch, evaluate_strings
from trained_models.registry import SHIPPED

CKPT_DIR = "checkpoint"
CONFIG = "train_config.json"
RUN_FILES = (CARD, WEIGHTS, CONFIG, CKPT_DIR)  # what makes a folder hold a run


class RunExists(cli.UsageError):
    """``--out`` already holds a run and neither ``--resume`` nor ``--force`` was given."""


# --------------------------------------------------------------------------- model + data


def model_spec(cfg: TrainConfig, vocab_size: int, language: Any = None) -> dict[str, Any]:
    """The JSON spec that :func:`trained_models.build.build_model` turns into the model.

    A Transformer's context covers the longest string of every window it is trained or tested on
    (plus BOS), and at least 2048 positions."""
    if cfg.model == "mamba":
        mc = MambaConfig(
            d_model=cfg.d_model,
            n_layers=cfg.layers,
            vocab_size=vocab_size,
            d_state=cfg.d_state,
            d_conv=cfg.d_conv,
            expand=cfg.expand,
            gate=cfg.gate,
            **({"dt_min": cfg.dt_init[0], "dt_max": cfg.dt_init[1]} if cfg.dt_init else {}),
        )
        return {"family": "mamba", "config": mc.to_dict()}
    if cfg.model == "mamba2":
        m2 = Mamba2Config(
            d_model=cfg.d_model, n_layers=cfg.layers, vocab_size=vocab_size, d_state=cfg.d_state,
            d_conv=cfg.d_conv, expand=cfg.expand, gate=cfg.gate, headdim=cfg.headdim,
            **({"dt_min": cfg.dt_init[0], "dt_max": cfg.dt_init[1]} if cfg.dt_init else {}),
        )
        return {"family": "mamba2", "config": m2.to_dict()}
    windows = [cfg.train_window or (0, 0), *(cfg.test_windows or {}).values()]
    if language is not None:
        train, tests = resolve_windows(cfg, language)
        windows += [train, *tests.values()]
    n_ctx = max(2048, max(hi for _, hi in windows) + 1)
    tc = TransformerConfig(
        d_model=cfg.d_model,
        n_layers=cfg.layers,
        n_heads=cfg.n_heads,
        vocab_size=vocab_size,
        n_ctx=n_ctx,
        pos_encoding=cfg.pos_encoding,
        seed=cfg.seed,
    )
    return {"family": "transformer", "config": tc.to_dict()}


def selection_metric(language: Any, result: dict[str, Any]) -> float:
    if "close_accuracy" in result:
        return result["close_accuracy"]
    if "glitch_rate" in result:
        return 1.0 - result["glitch_rate"]
    return result["strict_accuracy"]


def dev_description(train_window: tuple[int, int], n: Optional[int]) -> dict[str, Any]:
    """What the card records about the early-stopping set (``n``: its size)."""
    return {"window": list(train_window), "n": n,
            "drawn": "last, from the training window: disjoint from train and from every test bin"}


def bucket_batches(strings: list[str], batch_size: int) -> list[list[str]]:
    order = sorted(strings, key=lambda s: (len(s), s))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def loss_fn(logits: torch.Tensor, tb: TorchBatch, loss: str) -> torch.Tensor:
    """``bce``: mean over positions of the mean per-symbol BCE against the allowed-next set; ``lm``:
    next-symbol cross-entropy; ``bce+lm``: their sum (the sets stay sigmoid-decodable while the
    cross-entropy gives the sharp which-symbol-next signal, e.g. which bracket closes)."""
    mask = tb.mask
    total = logits.new_zeros(())
    if loss in ("bce", "bce+lm"):
        out = logits[..., FIRST_OUTPUT_ID:]
        target = tb.allowed[..., FIRST_OUTPUT_ID:].to(out.dtype)
        per = F.binary_cross_entropy_with_logits(out, target, reduction="none").mean(-1)
        total = total + (per * mask).sum() / mask.sum()
    if loss in ("lm", "bce+lm"):
        out = logits.reshape(-1, logits.shape[-1])
        tgt = tb.next_tokens.masked_fill(~mask, -100).reshape(-1)
        total = total + F.cross_entropy(out, tgt, ignore_index=-100)
    return total


def init_weights_path(source: str) -> Path:
    """The weights ``--init-from`` names: a run directory (its best ``model.safetensors``) or a shipped
    model's name."""
    for cand in (Path(source) / "model.safetensors", SHIPPED / source / "model.safetensors"):
        if cand.exists():
            return cand
    raise ValueError(f"--init-from {source!r}: neither a run directory with model.safetensors nor a shipped model")


def no_decay(name: str, p: torch.nn.Parameter) -> bool:
    """Whether ``decay="matrices"`` exempts a parameter: vectors (biases, norm gains, ``D``) and
    Mamba's ``A_log`` (a matrix whose decay would pull every eigenvalue towards exp(-dt))."""
    return p.ndim < 2 or name.split(".")[-1] == "A_log"


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups: one decayed group, plus an undecayed one under ``decay="matrices"``.
    Parameters shared by several modules (tied embeddings) appear once."""
    named = list(model.named_parameters())  # deduplicates tied parameters
    if cfg.decay == "all":
        return [{"params": [p for _, p in named], "weight_decay": cfg.weight_decay}]
    return [{"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0}]


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


# --------------------------------------------------------------------------- resumable state


def _save_checkpoint(out: Path, model, opt, state: dict[str, Any]) -> None:
    """The model, optimiser and state as one directory: a kill leaves the old checkpoint or the new
    one, never parts of both."""
    tensors, meta = _flatten_optimizer(opt)

    def write(ck: Path) -> None:
        atomic_save_safetensors(ck / "model.safetensors", unique_state_dict(model))
        atomic_save_safetensors(ck / "optim.safetensors", tensors)
        atomic_write_json(ck / "state.json", {**state, "optimizer_meta": meta})

    atomic_write_dir(out / CKPT_DIR, write)


def existing_run(out: Path) -> Optional[str]:
    """What run ``out`` holds (``None`` if none): its language and the run files present."""
    if not out.is_dir():
        return None
    recover_dir(out / CKPT_DIR)
    present = [name for name in RUN_FILES if (out / name).exists()]
    if not present:
        return None
    what = "a run"
    for name in (CONFIG, CARD):
        try:
            d = json.loads((out / name).read_text())
            lang = d["language"] if name == CONFIG else d["language"]["name"]
            params = d.get("language_params") if name == CONFIG else d["language"].get("params")
            what = f"a run of {lang}" + (f" {params}" if params else "")
            break
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return f"{what} ({', '.join(present)})"


def check_out(out_dir: str | Path, *, resume: bool, force: bool) -> Path:
    """``--out`` checked before anything is computed or written: a folder name, writable, and not
    holding a run unless ``resume`` or ``force``."""
    if str(out_dir).strip() == "":
        raise cli.UsageError("--out must name a folder, got an empty string")
    out = Path(out_dir)
    if resume and force:
        raise cli.UsageError("--resume and --force exclude each other (continue the run, or delete it)")
    check_writable(out)
    held = existing_run(out)
    if held and not (resume or force):
        raise RunExists(f"--out {out} already holds {held}; add --resume to continue it, --force to delete it "
                        f"and start over, or choose another --out")
    return out


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        meta["state"][str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v
                meta["state"][str(pid)][k] = "tensor"
            else:
                meta["state"][str(pid)][k] = v
    return tensors, meta


def _restore_optimizer(opt: torch.optim.Optimizer, path: Path, meta: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    state = {}
    for pid, st in meta["state"].items():
        state[int(pid)] = {k: (tensors[f"{pid}.{k}"] if v == "tensor" else v) for k, v in st.items()}
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# --------------------------------------------------------------------------- training


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, command: Optional[str] = None,
          progress: bool = True, finish: bool = False, force: bool = False) -> dict[str, Any]:
    """Train per ``cfg``; writes the run directory; returns the final card.

    ``out_dir`` must not hold a run unless ``resume`` (continue it; a folder without a run starts
    fresh) or ``force`` (delete it and start over): :class:`RunExists` otherwise. Everything is
    validated before the first write. ``finish=True`` (with ``resume``) ends an interrupted run where
    it stands: no more steps, the best weights so far (the last if none was evaluated) are evaluated on
    the test bins and the card records why training stopped.
    """
    out = check_out(out_dir, resume=resume, force=force)
    if finish and not resume:
        raise cli.UsageError("--finish needs --resume (it ends an interrupted run)")
    init_path = init_weights_path(cfg.init_from) if cfg.init_from else None  # checked before any data is made
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    language = languages.get(cfg.language, **cfg.language_params)
    vocab = Vocab(language.alphabet)
    spec = model_spec(cfg, vocab.size, language)

    saved_cfg_path = out / CONFIG
    if resume and saved_cfg_path.exists():
        try:
            saved = TrainConfig.from_dict(json.loads(saved_cfg_path.read_text()))
        except ValueError as e:
            raise ValueError(f"--resume: cannot read {saved_cfg_path}: {e}") from None
        if saved.to_dict() != cfg.to_dict():
            diff = {k: (saved.to_dict()[k], v) for k, v in cfg.to_dict().items() if saved.to_dict()[k] != v}
            budget_only = set(diff) <= {"max_minutes", "max_cpu_minutes", "epochs", "max_steps", "patience", "target", "threads"}
            if not budget_only:
                raise ValueError(f"--resume: config differs from the saved run in {out}: {diff}")

    t_data = time.time()
    splits = make_data(cfg, language)
    train_batches = [TorchBatch.from_batch(encode_batch(language, b, vocab))
                     for b in bucket_batches(splits["train"], cfg.batch_size)]
    dev = splits["dev"]  # early stopping: training-window strings in no other split
    if not dev or len(splits["train"]) == 0:
        raise ValueError(f"{language.name}: the training window holds too few strings for train and dev")
    data_seconds = time.time() - t_data

    model = build_model(spec)
    if cfg.init_from and not (resume and (out / CKPT_DIR / "state.json").exists()):
        load_weights(model, init_path, what=f"--init-from {cfg.init_from}")
    opt = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
    steps_per_epoch = len(train_batches)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    eval_every = max(1, steps_per_epoch // cfg.evals_per_epoch)

    # Everything is validated: only now is the folder touched.
    if force and not resume:
        for name in RUN_FILES:
            target = out / name
            if target.is_dir():
                import shutil

                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    atomic_write_json(saved_cfg_path, cfg.to_dict())

    state: dict[str, Any] = {"step": 0, "epoch": 0, "best": -1.0, "best_step": 0, "bad_evals": 0,
                             "train_seconds": 0.0, "history": [], "done": False, "command": None}
    ck = out / CKPT_DIR
    evaluate_only = False
    if resume and (ck / "state.json").exists():
        saved_state = json.loads((ck / "state.json").read_text())
        load_weights(model, ck / "model.safetensors", what=f"{ck}/model.safetensors")
        _restore_optimizer(opt, ck / "optim.safetensors", saved_state.pop("optimizer_meta"))
        state.update(saved_state)
        if state.get("done"):
            planned = state.get("total_steps")  # the step budget the run finished under (older runs: unknown)
            extend = total_steps > planned if planned is not None else state["step"] < total_steps
            if extend and not finish:
                # A larger budget (--epochs / --max-steps) extends a finished run: train on from here.
                state.update(done=False, bad_evals=0, stop_reason=None)
            else:
                card = json.loads((out / "card.json").read_text())
                if card.get("metrics"):
                    return card
                # Interrupted between the end of training and the final evaluation: evaluate now.
                evaluate_only = True
    if state.get("command") is None:
        state["command"] = command  # the first session's command is the one that trained the model
    elif command and command != state["command"] and command not in state.setdefault("resumed_with", []):
        state["resumed_with"].append(command)  # later sessions that changed the budget
    command = state["command"]
    state["n_dev"] = len(dev)

    budget = cfg.max_minutes * 60 if cfg.max_minutes else None
    cpu_budget = cfg.max_cpu_minutes * 60 if cfg.max_cpu_minutes else None
    t_session, cpu_session = time.time(), time.process_time()
    model.train()
    stop_reason = None

    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    bar = tqdm(total=total_steps, initial=state["step"], disable=not progress, desc=f"train {cfg.language}",
               dynamic_ncols=True) if tqdm else None

    if evaluate_only:
        stop_reason = state["stop_reason"]
    elif finish:
        if state["best_step"] == 0:  # never evaluated on dev: the last weights are what there is
            save_model(model, out, _card(cfg, spec, language, state, command, metrics=None))
        stop_reason = f"finished early by request at step {state['step']}"
    while state["step"] < total_steps and stop_reason is None:
        epoch = state["step"] // steps_per_epoch
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(steps_per_epoch)
        start_in_epoch = state["step"] % steps_per_epoch
        for j in range(start_in_epoch, steps_per_epoch):
            t0 = time.time()
            tb = train_batches[order[j]]
            for g in opt.param_groups:
                g["lr"] = lr_at(state["step"], total_steps, cfg)
            logits = model(tb.tokens)
            logits = logits[0] if isinstance(logits, tuple) else logits
            loss = loss_fn(logits, tb, cfg.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            state["step"] += 1
            state["epoch"] = state["step"] / steps_per_epoch
            state["train_seconds"] += time.time() - t0
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}", best=f"{state['best']:.4f}")
            last_of_epoch = j == steps_per_epoch - 1
            if state["step"] % eval_every == 0 or last_of_epoch or state["step"] >= total_steps:
                res = evaluate_strings(model, language, dev, decode=cfg.decode, batch_size=cfg.batch_size)
                metric = selection_metric(language, res)
                state["history"].append({"step": state["step"], "epoch": round(state["epoch"], 3),
                                         "loss": float(loss.item()), "dev": metric,
                                         "train_seconds": round(state["train_seconds"], 1)})
                if metric >= state["best"]:
                    # A tie keeps the later weights (trained longer, same dev score: what matters once
                    # the dev metric saturates) but does not reset the patience count.
                    state.update(best=metric, best_step=state["step"],
                                 bad_evals=0 if metric > state["best"] else state["bad_evals"] + 1)
                    save_model(model, out, _card(cfg, spec, language, state, command, metrics=None))
                else:
                    state["bad_evals"] += 1
                if cfg.target is not None and state["best"] >= cfg.target:
                    stop_reason = f"reached target {cfg.target}"
                elif state["bad_evals"] >= cfg.patience:
                    stop_reason = f"no improvement in {cfg.patience} evaluations"
                _save_checkpoint(out, model, opt, state)
            if budget is not None and time.time() - t_session > budget:
                stop_reason = stop_reason or f"wall budget {cfg.max_minutes} min"
            if cpu_budget is not None and time.process_time() - cpu_session > cpu_budget:
                stop_reason = stop_reason or f"CPU budget {cfg.max_cpu_minutes} min"
            if stop_reason or state["step"] >= total_steps:
                break
    if bar is not None:
        bar.close()
    finished = stop_reason is None or not stop_reason.startswith(BUDGET_STOPS)
    state["done"] = finished
    state["stop_reason"] = stop_reason or "step budget reached"
    state["total_steps"] = total_steps
    _save_checkpoint(out, model, opt, state)

    if not finished and state["best_step"] == 0:
        # Stopped by the wall budget before any evaluation: the last weights become the run's model.
        save_model(model, out, _card(cfg, spec, language, state, command, metrics=None))

    # Final evaluation of the best weights on the held-out bins (also when the wall budget stopped the
    # run: the card is then loadable and marked unfinished, and --resume continues from the checkpoint).
    best = build_model(spec)
    load_weights(best, out / "model.safetensors")
    metrics = {}
    _, tests = resolve_windows(cfg, language)
    for name in tests:
        strings = splits.get(name, [])[: cfg.n_test]
        if strings:
            metrics[name] = evaluate_strings(best, language, strings, decode=cfg.decode,
                                             batch_size=cfg.batch_size)
    metrics.update(extra_metrics(cfg, best, language))
    card = _card(cfg, spec, language, state, command, metrics=metrics or None)
    card["data_seconds"] = round(data_seconds, 1)
    if state["best_step"] == 0:
        card["weights_selected"] = f"the last weights (step {state['step']}; no dev evaluation yet)"
    save_model(best, out, card)
    return card


def extra_metrics(cfg: TrainConfig, model: torch.nn.Module, language: Any) -> dict[str, Any]:
    """Task-specific extra evaluations (flip-flop: FFL(0.8) and FFL(0.98) at length 512)."""
    if language.name != "flipflop":
        return {}
    out = {}
    for p in (0.8, 0.98):
        lang = languages.get("flipflop", p=p)
        strings = lang.sample(cfg.n_test, 512, 512, seed=cfg.seed + 1000)
        out[f"ffl{p}"] = evaluate_strings(model, lang, strings, decode=cfg.decode, batch_size=cfg.batch_size)
    return out


def _card(cfg: TrainConfig, spec: dict, language: Any, state: dict, command: Optional[str],
          metrics: Optional[dict]) -> dict[str, Any]:
    train_w, tests = resolve_windows(cfg, language)
    return {
        "language": {"name": language.name, "params": dict(getattr(language, "params", {}) or {}),
                     "alphabet": list(language.alphabet)},
        "model": spec,
        "decode": cfg.decode,
        "seed": cfg.seed,
        "train_config": cfg.to_dict(),
        "train_command": command,
        "resumed_with": state.get("resumed_with", []),
        "train_window": list(train_w),
        "dev": dev_description(train_w, state.get("n_dev")),
        "test_windows": {k: list(v) for k, v in tests.items()},
        "train_seconds": round(state["train_seconds"], 1),
        "steps": state["step"],
        "best_step": state["best_step"],
        "best_dev": state["best"],
        "stop_reason": state.get("stop_reason"),
        "finished": bool(state.get("done")),
        "metrics": metrics,
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {cfg.threads} threads",
    }


# --------------------------------------------------------------------------- CLI


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
        dt_init=tuple(args.dt_init) if args.dt_init else None, init_from=args.init_from,
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
