"""Control tasks (Hewitt & Liang 2019) and the baselines a probe is read against: the majority class (or
training mean) and a randomly initialised model of the same architecture."""
from __future__ import annotations

import copy
import dataclasses
import zlib

import numpy as np
import torch
from sklearn.metrics import r2_score

__all__ = ["apply_control", "control_labels", "control_mapping", "majority_baseline", "random_init_like"]


def control_mapping(tokens, labels, seed: int = 0) -> dict:
    """token type -> control label, each drawn independently from the empirical label marginal.

    Types are visited in sorted order, so the mapping depends only on (types, labels, seed). NaN labels
    (masked values) are left out of the marginal.
    """
    tokens = np.asarray(tokens)
    labels = np.asarray(labels)
    pool = labels[~np.isnan(labels)] if labels.dtype.kind == "f" else labels
    if pool.size == 0:
        raise ValueError("no labels to draw a control task from")
    rng = np.random.default_rng(seed)
    types = np.unique(tokens)
    draws = pool[rng.integers(0, pool.size, size=types.size)]
    return {t.item(): d.item() for t, d in zip(types, draws)}


def apply_control(tokens, mapping: dict, seed: int = 0, marginal=None) -> np.ndarray:
    """Control labels of ``tokens`` under ``mapping``; token types absent from it get a draw from
    ``marginal`` (default: the mapping's values) made reproducibly per type."""
    tokens = np.asarray(tokens)
    values = np.asarray(list(mapping.values()))
    pool = values if marginal is None else np.asarray(marginal)
    out = np.empty(tokens.shape, dtype=values.dtype)
    for t in np.unique(tokens):
        key = t.item()
        if key in mapping:
            v = mapping[key]
        else:
            stable = key if isinstance(key, int) else zlib.crc32(repr(key).encode())
            v = pool[np.random.default_rng([seed, abs(stable) % (2**31)]).integers(pool.size)]
        out[tokens == t] = v
    return out


def control_labels(tokens, labels, seed: int = 0) -> np.ndarray:
    """Control task: each token type gets one label drawn from the empirical marginal of ``labels``;
    every position takes its token's label. Same label marginal (in expectation over types), but a
    function of token identity only. Use one mapping for train and test (:func:`control_mapping` on
    the training rows, :func:`apply_control` on both)."""
    return apply_control(tokens, control_mapping(tokens, labels, seed), seed)


# ----------------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------------


def majority_baseline(y_train, y_test, kind: str) -> float:
    """Accuracy of always predicting the training majority class, or R^2 of predicting the training
    mean (``kind="regression"``; about 0, negative when the test mean differs)."""
    y_train = np.asarray(y_train)
    y_test = np.asarray(y_test)
    if kind == "classification":
        vals, counts = np.unique(y_train, return_counts=True)
        return float(np.mean(y_test == vals[np.argmax(counts)]))
    y_train = y_train[~np.isnan(y_train)]
    y_test = y_test[~np.isnan(y_test)]
    return float(r2_score(y_test, np.full(y_test.shape, y_train.mean())))


def random_init_like(model, seed: int = 1):
    """A fresh, randomly initialised model of ``model``'s class built from its ``cfg`` (with ``cfg.seed``
    replaced when the config has one), on the same device and in eval mode.

    Raises ``TypeError`` when the model has no ``cfg`` or its class cannot be rebuilt from it.
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise TypeError(f"{type(model).__name__} has no .cfg; build the random-init model yourself")
    if dataclasses.is_dataclass(cfg) and any(f.name == "seed" for f in dataclasses.fields(cfg)):
        cfg = dataclasses.replace(cfg, seed=seed)
    elif hasattr(cfg, "seed"):
        cfg = copy.copy(cfg)
        try:
            cfg.seed = seed
        except AttributeError:
            pass
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        try:
            fresh = type(model)(cfg)
        except TypeError as exc:
            raise TypeError(f"cannot rebuild {type(model).__name__} from its cfg: {exc}") from exc
    finally:
        torch.random.set_rng_state(state)
    device = None
    for p in model.parameters():
        device = p.device
        break
    if device is not None:
        fresh = fresh.to(device)
    return fresh.eval()

