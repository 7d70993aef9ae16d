"""The training loop behind ``python -m trained_models.train`` (objective, schedule and run folder: see there).

:func:`train` reads as its steps: :func:`_setup` checks everything and builds the data, the model and the
optimiser, writing nothing; the run folder is then prepared and a resumed run's state loaded
(:func:`_resume`); :func:`_train_loop` runs the epochs, one :func:`_step` a batch, with
:func:`_evaluate_dev` (keep the best weights, write the checkpoint, stop early) on :func:`evaluates_at`'s
schedule (every :func:`eval_interval` steps and at each epoch's end); :func:`_finish` evaluates the best
weights on the test bins and writes the card. The loss, schedule and parameter groups are in
:mod:`trained_models.objective`, the run folder and its checkpoint in :mod:`trained_models.run_folder`.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

import languages
from languages import cli
from languages.datasets import encode_batch
from languages.io import atomic_write_json
from languages.vocab import Vocab
from trained_models.build import build_model, model_spec
from trained_models.checkpoint import CARD, load_weights, save_model
from trained_models.config import BUDGET_STOPS, TrainConfig, make_data, resolve_windows
from trained_models.evaluate import TorchBatch, evaluate_strings
from trained_models.objective import bucket_batches, loss_fn, lr_at, param_groups, selection_metric
from trained_models.registry import SHIPPED
from trained_models.run_folder import CKPT_DIR, CONFIG, check_out, clear_run, restore_optimizer, save_checkpoint


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, command: Optional[str] = None,
          progress: bool = True, finish: bool = False, force: bool = False) -> dict[str, Any]:
    """Train per ``cfg``; writes the run directory; returns the final card.

    ``out_dir`` must not hold a run unless ``resume`` (continue it; a folder without a run starts
    fresh) or ``force`` (delete it and start over): :class:`~trained_models.run_folder.RunExists`
    otherwise. Everything is validated before the first write. ``finish=True`` (with ``resume``) ends an
    interrupted run where it stands: no more steps, the best weights so far (the last if none was
    evaluated) are evaluated on the test bins and the card records why training stopped.
    """
    out = check_out(out_dir, resume=resume, force=force)
    if finish and not resume:
        raise cli.UsageError("--finish needs --resume (it ends an interrupted run)")
    run = _setup(cfg, out, resume)

    # Everything is validated: only now is the folder touched.
    if force and not resume:
        clear_run(out)
    atomic_write_json(out / CONFIG, cfg.to_dict())
    state = _fresh_state()
    evaluate_only = False
    if resume and (out / CKPT_DIR / "state.json").exists():
        done_card, evaluate_only = _resume(run, state, finish)
        if done_card is not None:
            return done_card
    run.command = _record_command(state, command)
    state["n_dev"] = len(run.dev)

    stop_reason = _train_loop(run, state, progress=progress, evaluate_only=evaluate_only, finish=finish)
    return _finish(run, state, stop_reason)


@dataclass
class _Run:
    """What one invocation of :func:`train` works with (made by :func:`_setup`)."""

    cfg: TrainConfig
    out: Path
    language: Any
    spec: dict[str, Any]
    splits: dict[str, list[str]]
    train_batches: list[TorchBatch]
    data_seconds: float
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    total_steps: int
    command: Optional[str] = None  # the command that trained the model (the first session's)

    @property
    def dev(self) -> list[str]:
        """Early stopping: training-window strings in no other split."""
        return self.splits["dev"]

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_batches)

    def card(self, state: dict[str, Any], metrics: Optional[dict] = None) -> dict[str, Any]:
        return _card(self.cfg, self.spec, self.language, state, self.command, metrics)


# --------------------------------------------------------------------------- setup


def _setup(cfg: TrainConfig, out: Path, resume: bool) -> _Run:
    """Check the configuration and build the data, model and optimiser; writes nothing."""
    init_path = init_weights_path(cfg.init_from) if cfg.init_from else None  # checked before any data is made
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    language = languages.get(cfg.language, **cfg.language_params)
    vocab = Vocab(language.alphabet)
    spec = model_spec(cfg, vocab.size, language)
    if resume:
        _check_saved_config(cfg, out)

    t_data = time.time()
    splits = make_data(cfg, language)
    train_batches = [TorchBatch.from_batch(encode_batch(language, b, vocab))
                     for b in bucket_batches(splits["train"], cfg.batch_size)]
    if not splits["dev"] or len(splits["train"]) == 0:
        raise ValueError(f"{language.name}: the training window holds too few strings for train and dev")
    data_seconds = time.time() - t_data

    model = build_model(spec)
    if cfg.init_from and not (resume and (out / CKPT_DIR / "state.json").exists()):
        load_weights(model, init_path, what=f"--init-from {cfg.init_from}")
    opt = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
    return _Run(cfg=cfg, out=out, language=language, spec=spec, splits=splits, train_batches=train_batches,
                data_seconds=data_seconds, model=model, opt=opt,
                total_steps=cfg.max_steps or cfg.epochs * len(train_batches))


def _check_saved_config(cfg: TrainConfig, out: Path) -> None:
    """``--resume`` may change the budget (epochs, steps, time, patience, target, threads), nothing else."""
    saved_cfg_path = out / CONFIG
    if not saved_cfg_path.exists():
        return
    try:
        saved = TrainConfig.from_dict(json.loads(saved_cfg_path.read_text()))
    except ValueError as e:
        raise ValueError(f"--resume: cannot read {saved_cfg_path}: {e}") from None
    if saved.to_dict() != cfg.to_dict():
        diff = {k: (saved.to_dict()[k], v) for k, v in cfg.to_dict().items() if saved.to_dict()[k] != v}
        budget_only = set(diff) <= {"max_minutes", "max_cpu_minutes", "epochs", "max_steps", "patience", "target", "threads"}
        if not budget_only:
            raise ValueError(f"--resume: config differs from the saved run in {out}: {diff}")


def init_weights_path(source: str) -> Path:
    """The weights ``--init-from`` names: a run directory (its best ``model.safetensors``) or a shipped
    model's name."""
    for cand in (Path(source) / "model.safetensors", SHIPPED / source / "model.safetensors"):
        if cand.exists():
            return cand
    raise ValueError(f"--init-from {source!r}: neither a run directory with model.safetensors nor a shipped model")


# --------------------------------------------------------------------------- state


def _fresh_state() -> dict[str, Any]:
    """The loop's state as the checkpoint's ``state.json`` saves it."""
    return {"step": 0, "epoch": 0, "best": -1.0, "best_step": 0, "bad_evals": 0,
            "train_seconds": 0.0, "history": [], "done": False, "command": None}


def _resume(run: _Run, state: dict[str, Any], finish: bool) -> tuple[Optional[dict[str, Any]], bool]:
    """Load the checkpoint into the model, optimiser and ``state``. Returns ``(card, evaluate_only)``:
    the card of a run that is complete (nothing left to do), else ``None``, and whether only the final
    evaluation is left."""
    ck = run.out / CKPT_DIR
    saved_state = json.loads((ck / "state.json").read_text())
    load_weights(run.model, ck / "model.safetensors", what=f"{ck}/model.safetensors")
    restore_optimizer(run.opt, ck / "optim.safetensors", saved_state.pop("optimizer_meta"))
    state.update(saved_state)
    if not state.get("done"):
        return None, False
    planned = state.get("total_steps")  # the step budget the run finished under (older runs: unknown)
    extend = run.total_steps > planned if planned is not None else state["step"] < run.total_steps
    if extend and not finish:
        # A larger budget (--epochs / --max-steps) extends a finished run: train on from here.
        state.update(done=False, bad_evals=0, stop_reason=None)
        return None, False
    card = json.loads((run.out / CARD).read_text())
    if card.get("metrics"):
        return card, False
    return None, True  # interrupted between the end of training and the final evaluation: evaluate now


def _record_command(state: dict[str, Any], command: Optional[str]) -> Optional[str]:
    """The first session's command is the one that trained the model; later sessions that changed the
    budget are listed in ``resumed_with``. Returns the first."""
    if state.get("command") is None:
        state["command"] = command
    elif command and command != state["command"] and command not in state.setdefault("resumed_with", []):
        state["resumed_with"].append(command)
    return state["command"]


# --------------------------------------------------------------------------- the loop


class _Budget:
    """This invocation's time budgets: ``--max-minutes`` of wall clock, ``--max-cpu-minutes`` of CPU time."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.wall0, self.cpu0 = time.time(), time.process_time()

    def spent(self) -> Optional[str]:
        """The stop reason once a budget is spent, else ``None``."""
        if self.cfg.max_minutes and time.time() - self.wall0 > self.cfg.max_minutes * 60:
            return f"wall budget {self.cfg.max_minutes} min"
        if self.cfg.max_cpu_minutes and time.process_time() - self.cpu0 > self.cfg.max_cpu_minutes * 60:
            return f"CPU budget {self.cfg.max_cpu_minutes} min"
        return None


def _train_loop(run: _Run, state: dict[str, Any], *, progress: bool, evaluate_only: bool,
                finish: bool) -> Optional[str]:
    """Train from ``state["step"]`` (each epoch in the seed's order for that epoch) until the step budget
    (returns ``None``), early stopping or a time budget (returns why)."""
    budget = _Budget(run.cfg)
    run.model.train()
    bar = _progress_bar(run, state, progress)
    stop_reason = None
    if evaluate_only:
        stop_reason = state["stop_reason"]
    elif finish:
        if state["best_step"] == 0:  # never evaluated on dev: the last weights are what there is
            save_model(run.model, run.out, run.card(state))
        stop_reason = f"finished early by request at step {state['step']}"
    while state["step"] < run.total_steps and stop_reason is None:
        epoch = state["step"] // run.steps_per_epoch
        order = np.random.default_rng([run.cfg.seed, epoch]).permutation(run.steps_per_epoch)
        for j in range(state["step"] % run.steps_per_epoch, run.steps_per_epoch):
            loss = _step(run, state, run.train_batches[order[j]])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}", best=f"{state['best']:.4f}")
            if evaluates_at(state["step"], run.steps_per_epoch, run.cfg.evals_per_epoch, run.total_steps):
                stop_reason = _evaluate_dev(run, state, loss)
            stop_reason = stop_reason or budget.spent()
            if stop_reason or state["step"] >= run.total_steps:
                break
    if bar is not None:
        bar.close()
    return stop_reason


def eval_interval(steps_per_epoch: int, evals_per_epoch: int) -> int:
    """The regular interval, in optimiser steps, between dev evaluations."""
    return max(1, steps_per_epoch // evals_per_epoch)


def evaluates_at(step: int, steps_per_epoch: int, evals_per_epoch: int, total_steps: int) -> bool:
    """Whether training scores dev after optimiser step ``step`` (counted from 1): every
    :func:`eval_interval` steps, at each epoch's last step (a second evaluation a step or two after the last
    regular one where the epoch is not a multiple of the interval) and at the budget's last step."""
    return step % eval_interval(steps_per_epoch, evals_per_epoch) == 0 or step % steps_per_epoch == 0 \
        or step >= total_steps


def evaluation_steps(steps_per_epoch: int, evals_per_epoch: int, total_steps: int) -> list[int]:
    """Every optimiser step after which a run that trains its whole budget scores dev (:func:`evaluates_at`)."""
    return [s for s in range(1, total_steps + 1) if evaluates_at(s, steps_per_epoch, evals_per_epoch, total_steps)]


def patience_span(steps_per_epoch: int, evals_per_epoch: int, patience: int,
                  total_steps: int) -> Optional[tuple[int, int]]:
    """The fewest and most optimiser steps that ``patience`` dev evaluations without improvement take to end a
    run (from the evaluation that set the best score to the one that stops it), on :func:`evaluates_at`'s
    schedule; ``None`` where the step budget holds no such stretch."""
    steps = evaluation_steps(steps_per_epoch, evals_per_epoch, total_steps)
    spans = [steps[i + patience] - steps[i] for i in range(len(steps) - patience)]
    return (min(spans), max(spans)) if spans else None


def _progress_bar(run: _Run, state: dict[str, Any], progress: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover (an optional dependency)
        return None
    return tqdm(total=run.total_steps, initial=state["step"], disable=not progress, desc=f"train {run.cfg.language}",
                dynamic_ncols=True)


def _step(run: _Run, state: dict[str, Any], tb: TorchBatch) -> torch.Tensor:
    """One optimiser step on one batch at the scheduled learning rate; returns the batch's loss."""
    t0 = time.time()
    for g in run.opt.param_groups:
        g["lr"] = lr_at(state["step"], run.total_steps, run.cfg)
    logits = run.model(tb.tokens)
    logits = logits[0] if isinstance(logits, tuple) else logits
    loss = loss_fn(logits, tb, run.cfg.loss)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if run.cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.opt.step()
    state["step"] += 1
    state["epoch"] = state["step"] / run.steps_per_epoch
    state["train_seconds"] += time.time() - t0
    return loss


def _evaluate_dev(run: _Run, state: dict[str, Any], loss: torch.Tensor) -> Optional[str]:
    """Score the model on dev; keep its weights if best so far; write the checkpoint. Returns why to stop
    early (target reached, patience spent), else ``None``."""
    cfg = run.cfg
    res = evaluate_strings(run.model, run.language, run.dev, decode=cfg.decode, batch_size=cfg.batch_size)
    metric = selection_metric(run.language, res)
    state["history"].append({"step": state["step"], "epoch": round(state["epoch"], 3),
                             "loss": float(loss.item()), "dev": metric,
                             "train_seconds": round(state["train_seconds"], 1)})
    if metric >= state["best"]:
        # A tie keeps the later weights (trained longer, same dev score: what matters once
        # the dev metric saturates) but does not reset the patience count.
        state.update(best=metric, best_step=state["step"],
                     bad_evals=0 if metric > state["best"] else state["bad_evals"] + 1)
        save_model(run.model, run.out, run.card(state))
    else:
        state["bad_evals"] += 1
    stop_reason = None
    if cfg.target is not None and state["best"] >= cfg.target:
        stop_reason = f"reached target {cfg.target}"
    elif state["bad_evals"] >= cfg.patience:
        stop_reason = f"no improvement in {cfg.patience} evaluations"
    save_checkpoint(run.out, run.model, run.opt, state)
    return stop_reason


# --------------------------------------------------------------------------- finish


def _finish(run: _Run, state: dict[str, Any], stop_reason: Optional[str]) -> dict[str, Any]:
    """Save the final checkpoint, evaluate the best weights on the test bins and write their card."""
    finished = stop_reason is None or not stop_reason.startswith(BUDGET_STOPS)
    state["done"] = finished
    state["stop_reason"] = stop_reason or "step budget reached"
    state["total_steps"] = run.total_steps
    save_checkpoint(run.out, run.model, run.opt, state)

    if not finished and state["best_step"] == 0:
        # Stopped by the wall budget before any evaluation: the last weights become the run's model.
        save_model(run.model, run.out, run.card(state))

    # Final evaluation of the best weights on the held-out bins (also when the wall budget stopped the
    # run: the card is then loadable and marked unfinished, and --resume continues from the checkpoint).
    best = build_model(run.spec)
    load_weights(best, run.out / "model.safetensors")
    metrics = _test_metrics(run, best)
    card = run.card(state, metrics or None)
    card["data_seconds"] = round(run.data_seconds, 1)
    if state["best_step"] == 0:
        card["weights_selected"] = f"the last weights (step {state['step']}; no dev evaluation yet)"
    save_model(best, run.out, card)
    return card


def _test_metrics(run: _Run, model: torch.nn.Module) -> dict[str, Any]:
    """``model`` evaluated on each test bin (its first ``n_test`` strings) and the task's extra sets."""
    cfg = run.cfg
    metrics = {}
    _, tests = resolve_windows(cfg, run.language)
    for name in tests:
        strings = run.splits.get(name, [])[: cfg.n_test]
        if strings:
            metrics[name] = evaluate_strings(model, run.language, strings, decode=cfg.decode,
                                             batch_size=cfg.batch_size)
    metrics.update(extra_metrics(cfg, model, run.language))
    return metrics


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


def dev_description(train_window: tuple[int, int], n: Optional[int]) -> dict[str, Any]:
    """What the card records about the early-stopping set (``n``: its size)."""
    return {"window": list(train_window), "n": n,
            "drawn": "last, from the training window: disjoint from train and from every test bin"}


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
