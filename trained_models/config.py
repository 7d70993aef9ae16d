"""Training configuration: one dataclass, saved as JSON beside every run's outputs, and the data it makes.

An experiment is a :class:`TrainConfig` plus its seed; ``python -m trained_models.train`` builds one
from its flags, and ``--resume`` checks that the saved one matches. :func:`make_data` draws its
train / dev / test strings (the windows from :func:`resolve_windows`), the same for training, the
suite's plan and re-evaluation.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from languages.datasets import make_splits
from languages.paper import stored_dir, stored_members, stored_test_bins

LOSSES = ("bce", "lm", "bce+lm")
DECAYS = ("all", "matrices")
FAMILIES = ("mamba", "mamba2", "transformer")
BUDGET_STOPS = ("wall budget", "CPU budget")  # stop reasons of a run cut by --max-minutes / --max-cpu-minutes


@dataclass
class TrainConfig:
    """What to train, on what, and how.

    ``loss="bce"``: a sigmoid per output symbol against the allowed-next set (Bhattamishra et al.'s
    character-prediction task), the default. ``loss="lm"``: cross-entropy on the next symbol of member strings (the
    language-modelling objective Yao et al. use for Dyck). ``loss="bce+lm"``: their sum. Allowed sets
    are decoded by ``sigmoid(logits) > 0.5`` for ``bce`` and ``bce+lm`` and by ``softmax > threshold``
    for ``lm`` (see ``decode``); an ``lm`` model's set decoding is fragile where many symbols share the
    probability mass (Dyck's eight opening brackets sit near the threshold), so prefer ``bce+lm`` when
    sets matter (strict accuracy, interventions scored on sets).

    ``decay="all"`` applies AdamW's weight decay to every parameter (the first runs' behaviour, kept
    as the default so saved runs resume unchanged). ``decay="matrices"`` decays weight matrices only:
    Mamba's ``A_log`` and ``D``, every bias and every norm gain are left alone. Decaying
    ``dt_proj.bias`` pulls the step size towards softplus(0) = 0.69 and ``A_log`` towards 0, both of
    which shorten the state's memory; see :func:`trained_models.objective.param_groups`.
    """

    language: str
    language_params: dict[str, Any] = field(default_factory=dict)
    model: str = "mamba"
    layers: int = 2
    d_model: int = 32
    # Mamba (and Mamba-2: heads of hooks.mamba2.Mamba2Config's default headdim, one group)
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    gate: str = "nonnegative"
    headdim: int = 16  # Mamba-2 only: channels per head (heads = expand * d_model / headdim)
    dt_init: Optional[tuple[float, float]] = None  # (dt_min, dt_max) of the step-size init; None: Mamba's
    # Transformer
    n_heads: int = 4
    pos_encoding: str = "learned"
    # optimisation
    seed: int = 0
    loss: str = "bce"
    lr: float = 1e-3
    weight_decay: float = 0.1
    decay: str = "all"
    batch_size: int = 32
    epochs: int = 20
    max_steps: Optional[int] = None
    max_minutes: Optional[float] = None  # wall clock of one invocation
    max_cpu_minutes: Optional[float] = None  # CPU time of this process in one invocation (load-independent)
    warmup_steps: int = 100
    grad_clip: float = 1.0
    patience: int = 4
    target: Optional[float] = None
    evals_per_epoch: int = 1
    # data
    n_train: int = 10_000
    n_dev: int = 500
    n_test: int = 500
    train_window: Optional[tuple[int, int]] = None
    test_windows: Optional[dict[str, tuple[int, int]]] = None
    threads: int = 2
    init_from: Optional[str] = None  # initial weights: a run directory or a shipped name (fine-tuning)
    paper_data: Optional[str] = None  # a clone of the paper's repository: its stored strings (stored_splits)

    def __post_init__(self) -> None:
        if self.model not in FAMILIES:
            raise ValueError(f"model must be one of {FAMILIES}, got {self.model!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {self.decay!r}")
        positive = ("layers", "d_model", "d_state", "d_conv", "expand", "n_heads", "batch_size", "epochs",
                    "patience", "evals_per_epoch", "n_train", "n_dev", "n_test", "threads")
        for name in positive + ("warmup_steps", "seed", "max_steps"):
            v = getattr(self, name)
            if v is None and name == "max_steps":
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name} must be an integer, got {v!r}")
            if v < (1 if name in positive + ("max_steps",) else 0):
                raise ValueError(f"{name} must be {'positive' if name in positive else '>= 0'}, got {v}")
        for name, lo in (("lr", 0.0), ("max_minutes", 0.0), ("max_cpu_minutes", 0.0)):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > lo):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.target is not None and not 0 <= self.target <= 1:
            raise ValueError(f"target must be in [0, 1], got {self.target!r}")
        if self.dt_init is not None:
            lo, hi = self.dt_init
            if not 0 < lo <= hi:
                raise ValueError(f"dt_init must satisfy 0 < min <= max, got {self.dt_init}")
            self.dt_init = (float(lo), float(hi))
        if self.train_window is not None:
            lo, hi = self.train_window
            if not 0 <= lo <= hi:
                raise ValueError(f"train_window must satisfy 0 <= min <= max, got {self.train_window}")
            self.train_window = (int(lo), int(hi))
        if self.test_windows is not None:
            self.test_windows = {k: (int(v[0]), int(v[1])) for k, v in self.test_windows.items()}

    @property
    def decode(self) -> str:
        return "softmax" if self.loss == "lm" else "sigmoid"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        d = dict(d)
        for key in ("train_window", "dt_init"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


# --------------------------------------------------------------------------- the data a config makes


def resolve_windows(cfg: TrainConfig, language: Any) -> tuple[tuple[int, int], dict[str, tuple[int, int]]]:
    """The run's training window and test windows (``bin0`` = the training window unless given)."""
    bins = {k: tuple(v) for k, v in (getattr(language, "default_bins", None) or {}).items()}
    train = cfg.train_window or bins.get("train")
    if train is None:
        raise ValueError(f"{language.name} has no default training window: pass --min-len/--max-len")
    tests = cfg.test_windows or {k: v for k, v in bins.items() if k != "train"}
    if "bin0" not in tests:
        tests = {"bin0": train, **tests}
    return tuple(train), dict(tests)


def make_data(cfg: TrainConfig, language: Any) -> dict[str, list[str]]:
    """The run's splits (train, the test bins, dev), deterministic for its seed (``cfg.paper_data``: the
    paper's stored strings, :func:`stored_splits`)."""
    if cfg.paper_data:
        return stored_splits(cfg, language)
    train, tests = resolve_windows(cfg, language)
    bins = {"train": train, **tests}
    # dev (early stopping) is drawn last from the training window, disjoint from train and every test
    # bin. Small windows (a^n b^n, Tomita 1) hold fewer strings than asked: take what there is.
    return make_splits(language, cfg.n_train, cfg.n_test, cfg.seed, bins=bins, n_dev=cfg.n_dev,
                       allow_fewer=True)


def _fmt_windows(windows: dict[str, tuple[int, int]]) -> str:
    return ", ".join(f"{k}={lo}:{hi}" for k, (lo, hi) in windows.items())


def stored_splits(cfg: TrainConfig, language: Any) -> dict[str, list[str]]:
    """The run's splits from the paper's stored data sets (``cfg.paper_data``: a clone or mirror of its
    repository; :func:`languages.paper.stored_split`) instead of our sampler, to tell what a result owes to
    the strings the paper's generators draw.

    Test bins: up to ``n_test`` of each stored bin the run reports (:func:`languages.paper.reported_bins`; a
    seeded subset, in stored order). The windows, where the config gives them (the suite's commands do, to be
    self-contained), must be the language's own: the stored strings fix them. Dev: ``n_dev``
    distinct stored training strings that are in no stored test bin. Train: up to ``n_train`` of the other
    stored training strings (a seeded subset; the stored duplicates kept) that are in no test bin either, so
    bin0 stays held out (the paper's Tomita files share some bin0 strings with train). Every string must be
    a member of ``language``."""
    rng = np.random.default_rng(cfg.seed)

    def subset(xs: list[str], n: int) -> list[str]:
        return [xs[i] for i in sorted(rng.permutation(len(xs))[:n])]

    stored_dir(language.name)  # names an unstored language before anything is read
    own = {k: tuple(v) for k, v in (getattr(language, "default_bins", None) or {}).items()}
    given = {**({"train": cfg.train_window} if cfg.train_window else {}), **(cfg.test_windows or {})}
    other = any(own.get(k) != tuple(v) for k, v in given.items())
    partial = cfg.test_windows is not None and set(cfg.test_windows) != set(own) - {"train"}
    if other or partial:  # the stored strings have their own lengths: other windows would mean nothing
        raise ValueError(f"paper_data: the stored strings fix the windows of {language.name}; give its own "
                         f"windows ({_fmt_windows(own)}) or none, not {_fmt_windows(given)}")
    stored = stored_members(cfg.paper_data, language, "train")
    bins = stored_test_bins(cfg.paper_data, language)  # the bins the run reports (languages.paper.reported_bins)
    # held out of train and dev: every stored test bin, reported or not (Tomita 5/6's unreported bin2 repeats
    # bin1's window; the strings are the same whether or not the run scores them)
    held = {x for split in ("bin0", "bin1", "bin2")
            for x in (bins[split] if split in bins else stored_members(cfg.paper_data, language, split,
                                                                       missing_ok=split == "bin2"))}
    tests = {split: subset(strings, cfg.n_test) for split, strings in bins.items()}
    dev = subset(sorted(set(stored) - held), cfg.n_dev)
    out = set(dev) | held
    train = subset([x for x in stored if x not in out], cfg.n_train)
    return {"train": train, **tests, "dev": dev}
