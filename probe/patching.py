"""Layer x position activation patching of any hook site, scored by a metric.

Denoising patching as in ``transformer_lens.patching`` (Meng et al. 2022; Heimersheim & Nanda 2024):
run the *corrupted* input, put the *clean* run's activation of one hook at one position in its place,
and score the patched logits with a metric; one score per (layer, position) gives a ``[n_layers, L]``
tensor (:func:`activation_patching`). Any hook whose activation is ``[B, L, ...]`` works: the residual
stream (``blocks.{l}.hook_resid_pre`` / ``_post``), a Mamba layer's ``mixer.hook_ssm_state`` (the
recurrence carries the patched state forward, ``hooks.mamba``'s overwrite semantics), a diagonal SSM's
``hook_ssm_state``. The model is changed only through ``model.hooks``, so it is restored after each
patch.

The default metric for Dyck (:func:`dyck_corruptions`, :func:`close_logit_diff`): clean and corrupted
prefixes differ only in the type of the bracket that is on top of the stack at the end, so the clean
run must close it with one bracket and the corrupted with another; the metric is the logit of the
clean closing bracket minus that of the corrupted one at the last position, averaged over the batch
(high: the clean information got through). It is normalised by :func:`normalized` to 0 (corrupted
run) .. 1 (clean run).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from languages.datasets import encode_batch
from languages.vocab import Vocab
from probe.interchange import _logits
from probe.subspace_edits import patch_full


@torch.no_grad()
def activation_patching(model: Any, clean_tokens: Tensor, corrupted_tokens: Tensor,
                        metric: Callable[[Tensor], Tensor], site: str = "blocks.{l}.hook_resid_pre",
                        layers: Optional[Sequence[int]] = None, positions: Optional[Sequence[int]] = None,
                        max_batch: int = 512) -> Tensor:
    """``[len(layers), len(positions)]``: ``metric(logits)`` of the corrupted run with
    ``site.format(l=layer)`` at ``position`` replaced by the clean run's activation there.

    ``clean_tokens`` and ``corrupted_tokens`` are ``[B, L]`` of equal shape; ``layers`` defaults to
    every layer (``model.cfg.n_layers``), ``positions`` to ``range(L)``.

    Vectorised over positions: the corrupted batch is tiled once per position (up to ``max_batch``
    rows a forward pass), and the hook patches each tile at its own position, so one forward pass
    scores many positions; :func:`activation_patching_loop` is the one-patch-a-pass reference."""
    layers, positions, names = _check(model, clean_tokens, corrupted_tokens, site, layers, positions)
    B = clean_tokens.shape[0]
    chunk = max(1, max_batch // B)
    out = torch.zeros(len(layers), len(positions), dtype=torch.float64)
    with _clean_cache(model, clean_tokens, names) as cache:
        for i, name in enumerate(names):
            src = cache[name]
            for lo in range(0, len(positions), chunk):
                pos = torch.as_tensor(positions[lo:lo + chunk])
                P = len(pos)
                rows = torch.arange(P * B)
                at = pos.repeat_interleave(B)  # tile j patches position pos[j]
                from_row = rows % B

                def hook(act: Tensor, hook: Any = None) -> Tensor:
                    new = act.clone()
                    new[rows, at] = src[from_row, at].to(act.dtype)
                    return new

                with model.hooks(fwd_hooks=[(name, hook)]):
                    logits = _logits(model(corrupted_tokens.repeat(P, 1)))
                for j in range(P):
                    out[i, lo + j] = float(metric(logits[j * B:(j + 1) * B]))
    return out


@torch.no_grad()
def activation_patching_loop(model: Any, clean_tokens: Tensor, corrupted_tokens: Tensor,
                             metric: Callable[[Tensor], Tensor], site: str = "blocks.{l}.hook_resid_pre",
                             layers: Optional[Sequence[int]] = None, positions: Optional[Sequence[int]] = None
                             ) -> Tensor:
    """The slow reference of :func:`activation_patching`: one forward pass per (layer, position)."""
    layers, positions, names = _check(model, clean_tokens, corrupted_tokens, site, layers, positions)
    out = torch.zeros(len(layers), len(positions), dtype=torch.float64)
    with _clean_cache(model, clean_tokens, names) as cache:
        for i, name in enumerate(names):
            for j, pos in enumerate(positions):
                with patch_full(model, name, cache[name], positions=pos):
                    out[i, j] = float(metric(_logits(model(corrupted_tokens))))
    return out


@contextlib.contextmanager
def _clean_cache(model: Any, clean_tokens: Tensor, names: Sequence[str]) -> Iterator[dict]:
    """The clean run's activations at ``names``, with the model in eval mode inside (restored on exit)."""
    was_training = model.training
    model.eval()
    try:
        _, cache = model.run_with_cache(clean_tokens, names_filter=lambda n: n in names)
        yield cache
    finally:
        model.train(was_training)


def _check(model: Any, clean_tokens: Tensor, corrupted_tokens: Tensor, site: str,
           layers: Optional[Sequence[int]], positions: Optional[Sequence[int]]
           ) -> tuple[list[int], list[int], list[str]]:
    if clean_tokens.shape != corrupted_tokens.shape:
        raise ValueError(f"clean {tuple(clean_tokens.shape)} and corrupted {tuple(corrupted_tokens.shape)} "
                         "tokens must have the same shape")
    layers = list(range(_n_layers(model))) if layers is None else list(layers)
    positions = list(range(clean_tokens.shape[1])) if positions is None else list(positions)
    names = [site.format(l=l) for l in layers]
    missing = [n for n in names if n not in model.hook_dict]
    if missing:
        raise ValueError(f"no hook named {missing[0]!r} on {type(model).__name__}")
    return layers, positions, names


def _n_layers(model: Any) -> int:
    cfg = getattr(model, "cfg", None)
    n = getattr(cfg, "n_layers", None)
    if n is None:
        n = len(getattr(model, "blocks"))
    return int(n)


def dyck_corruptions(language: Any, n: int, min_len: int, max_len: int, seed: int = 0
                     ) -> tuple[list[str], list[str], list[str], list[str]]:
    """``(clean, corrupted, clean_close, corrupted_close)``: ``n`` Dyck prefixes of one length with a
    non-empty stack at the end; the corrupted prefix changes the type of the top bracket (where it
    was opened), so the two need different closing brackets next."""
    rng = np.random.default_rng(seed)
    opens = [o for o, _ in language.pairs]
    close_of = dict(language.pairs)
    length = int(rng.integers(min_len, max_len + 1))
    clean, corrupted, cc, xc = [], [], [], []
    pool = language.sample(8 * n, length + 1, max_len + 40, seed=seed)
    for s in pool:
        prefix = s[:length]
        stack: list[int] = []
        for i, ch in enumerate(prefix):
            if ch in close_of:
                stack.append(i)
            else:
                stack.pop()
        if not stack:
            continue
        p = stack[-1]
        other = opens[(opens.index(prefix[p]) + 1 + int(rng.integers(len(opens) - 1))) % len(opens)]
        clean.append(prefix)
        corrupted.append(prefix[:p] + other + prefix[p + 1:])
        cc.append(close_of[prefix[p]])
        xc.append(close_of[other])
        if len(clean) == n:
            break
    if not clean:
        raise ValueError(f"no prefix of length {length} with a non-empty stack in the sample")
    return clean, corrupted, cc, xc


def close_logit_diff(language: Any, clean_close: Sequence[str], corrupted_close: Sequence[str],
                     position: int = -1) -> Callable[[Tensor], Tensor]:
    """A metric: mean over the batch of logit(clean close) - logit(corrupted close) at ``position``."""
    vocab = Vocab(language.alphabet)
    a = torch.tensor([vocab.encode(c)[0] for c in clean_close])
    b = torch.tensor([vocab.encode(c)[0] for c in corrupted_close])

    def metric(logits: Tensor) -> Tensor:
        last = logits[:, position].double()
        rows = torch.arange(last.shape[0])
        return (last[rows, a] - last[rows, b]).mean()

    return metric


def normalized(scores: Tensor, clean: float, corrupted: float) -> Tensor:
    """``(scores - corrupted) / (clean - corrupted)``: 0 = the corrupted run, 1 = the clean run."""
    d = clean - corrupted
    return (scores - corrupted) / (d if abs(d) > 1e-12 else float("nan"))


def dyck_patching(model: Any, language: Any, n: int = 16, min_len: int = 20, max_len: int = 40,
                  site: Optional[str] = None, seed: int = 0) -> dict[str, Any]:
    """Layer x position patching on :func:`dyck_corruptions` prefixes with :func:`close_logit_diff`.

    Returns ``{"scores" [layers, positions] (normalised), "raw", "clean", "corrupted", "site",
    "positions"}``; ``site`` defaults to the residual stream before each block."""
    clean, corrupted, cc, xc = dyck_corruptions(language, n, min_len, max_len, seed)
    vocab = Vocab(language.alphabet)
    # No END: the last position reads the last prefix symbol and predicts the next one.
    ct = torch.as_tensor(encode_batch(language, clean, vocab).tokens)[:, : len(clean[0]) + 1]
    xt = torch.as_tensor(encode_batch(language, corrupted, vocab).tokens)[:, : len(clean[0]) + 1]
    metric = close_logit_diff(language, cc, xc)
    site = site or "blocks.{l}.hook_resid_pre"
    with torch.no_grad():
        m_clean = float(metric(_logits(model(ct))))
        m_corr = float(metric(_logits(model(xt))))
    raw = activation_patching(model, ct, xt, metric, site)
    return {"scores": normalized(raw, m_clean, m_corr), "raw": raw, "clean": m_clean, "corrupted": m_corr,
            "site": site, "positions": list(range(ct.shape[1])), "length": len(clean[0]), "n": len(clean)}
