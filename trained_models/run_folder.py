"""A training run's folder (``--out`` of ``python -m trained_models.train``) and its resumable checkpoint.

The folder holds a run when it holds any of :data:`RUN_FILES`: the best model and its card (see
:mod:`trained_models.checkpoint`), the saved :class:`~trained_models.config.TrainConfig` (``train_config.json``)
and the checkpoint directory, which keeps the last weights, the optimiser and the loop's state as one
directory written atomically, so ``--resume`` continues an interrupted run exactly.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file

from languages import cli
from languages.io import atomic_save_safetensors, atomic_write_dir, atomic_write_json, check_writable, recover_dir
from trained_models.checkpoint import CARD, WEIGHTS, unique_state_dict

CKPT_DIR = "checkpoint"
CONFIG = "train_config.json"
RUN_FILES = (CARD, WEIGHTS, CONFIG, CKPT_DIR)  # what makes a folder hold a run


class RunExists(cli.UsageError):
    """``--out`` already holds a run and neither ``--resume`` nor ``--force`` was given."""


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


def trained_runs(folder: str | Path) -> list[Path]:
    """The finished runs directly under ``folder``, sorted: sub-folders holding a saved config and a card
    with test metrics (a run still training has a card without them); none if ``folder`` is not a directory."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    runs = []
    for p in sorted(folder.iterdir()):
        if (p / CARD).is_file() and (p / CONFIG).is_file():
            try:
                finished = bool(json.loads((p / CARD).read_text()).get("metrics"))
            except (OSError, ValueError):
                finished = False
            if finished:
                runs.append(p)
    return runs


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


def clear_run(out: Path) -> None:
    """Delete the run files in ``out`` (``--force``); anything else in the folder stays."""
    for name in RUN_FILES:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def save_checkpoint(out: Path, model, opt, state: dict[str, Any]) -> None:
    """The model, optimiser and state as one directory: a kill leaves the old checkpoint or the new
    one, never parts of both."""
    tensors, meta = _flatten_optimizer(opt)

    def write(ck: Path) -> None:
        atomic_save_safetensors(ck / "model.safetensors", unique_state_dict(model))
        atomic_save_safetensors(ck / "optim.safetensors", tensors)
        atomic_write_json(ck / "state.json", {**state, "optimizer_meta": meta})

    atomic_write_dir(out / CKPT_DIR, write)


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


def restore_optimizer(opt: torch.optim.Optimizer, path: Path, meta: dict[str, Any]) -> None:
    """Load into ``opt`` what :func:`save_checkpoint` wrote (``path``: its ``optim.safetensors``)."""
    tensors = load_file(str(path))
    state = {}
    for pid, st in meta["state"].items():
        state[int(pid)] = {k: (tensors[f"{pid}.{k}"] if v == "tensor" else v) for k, v in st.items()}
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
