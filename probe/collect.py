"""Collect hook activations aligned position by position with the automaton's state labels.

Glossary: B batch, L positions (= 1 + string length: BOS then one position per symbol), n kept
positions, d flattened features of a site.

Alignment (docs/interfaces.md): a model input is ``[BOS] + vocab.encode(s)``; model position ``i`` has
read ``s[:i]`` and is labelled with entry ``i`` of ``language.trace(s, initial=True)`` (entry 0 is the
start state, seen at BOS).

One path, three steps (:func:`collect`):

1. **Plan.** The strings, and so their traces, are known before the model runs, so the kept rows --
   (string, position) pairs sorted by (seq_id, pos) -- and their labels are fixed first. ``positions``
   is ``"all"``; an int ``k``: exactly ``min(k, total)`` flat indices drawn uniformly without
   replacement over all positions of all strings from ``numpy.random.default_rng(seed)`` (so the kept
   set does not depend on ``batch_size``); or a callable choosing per string from its trace.
2. **Batch.** Strings in order of length, ``batch_size`` at a time; a string with no kept row is left
   out of its batch (not run), and each batch is cut after its last kept position (the models are
   causal: later tokens cannot change earlier activations).
3. **Run and gather.** ``model.run_with_cache(tokens, names_filter=sites)`` under ``torch.no_grad``;
   only the kept rows of a batch's cache are copied into the output arrays (allocated once), and the
   cache is dropped before the next batch. Peak memory is the kept rows plus one batch's cache,
   independent of the number of tokens seen.

:func:`collect_reference` is the slow reference: one string at a time, whole and unpadded, the kept set
drawn by the same rule written out as a loop. Label encoding: :mod:`probe.labels`; the result:
:class:`probe.collection.Collection`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from languages.vocab import BOS_ID, PAD_ID, Vocab, model_inputs

from .collection import Collection
from .labels import CATEGORICAL_NAMES, encode_labels

__all__ = [
    "CATEGORICAL_NAMES",
    "Collection",
    "collect",
    "collect_reference",
    "layer_of",
    "sites_matching",
]

_LAYER_RE = re.compile(r"blocks\.(\d+)\.")


def layer_of(site: str) -> int | None:
    """Layer index parsed from ``blocks.{l}.`` in a hook name (0-based), or None."""
    m = _LAYER_RE.search(site)
    return int(m.group(1)) if m else None


def sites_matching(model, pattern: str) -> list[str]:
    """Hook names of ``model`` that fully match the regular expression ``pattern``, in model order.

    Example: ``sites_matching(model, r"blocks\\.\\d+\\.(mixer\\.)?hook_ssm_state")``.
    """
    rx = re.compile(pattern)
    return [name for name in model.hook_dict if rx.fullmatch(name)]


# ----------------------------------------------------------------------------------------------
# collect: plan, batch, run and gather
# ----------------------------------------------------------------------------------------------


def collect(
    model,
    language,
    strings_or_spec,
    sites: str | Sequence[str],
    variables: str | Sequence[str] = (),
    positions: str | int | Callable = "all",
    batch_size: int = 8,
    dtype=torch.float32,
    seed: int = 0,
    vocab=None,
    categorical: Iterable[str] = (),
    numeric: Iterable[str] = (),
    progress: bool = False,
) -> Collection:
    """Run ``model`` over strings and keep the activations at ``sites`` aligned with automaton labels.

    Args:
        model: a TransformerLens ``HookedRootModule`` whose forward takes ``tokens [B, L]`` (int64, BOS +
            symbols, right-padded with PAD); causal, so padding does not affect earlier positions.
        language: provides ``alphabet``, ``trace(s, initial=True)`` and (for a spec) ``sample(**spec)``.
        strings_or_spec: a list of strings, or ``{"n", "min_len", "max_len", "seed"}`` passed to
            ``language.sample`` (``seed`` defaults to this call's seed).
        sites: hook names; each cached tensor must be ``[B, L, ...]`` and is flattened to ``[n, d]``.
        variables: names in ``language.trace``; tuple-valued numeric ones become ``name[i]`` columns.
        positions: ``"all"``; an int (keep exactly ``min(positions, total)`` positions drawn uniformly
            without replacement over all positions of all strings, BOS positions included, seeded);
            or a callable ``f(s, trace) -> iterable of positions in [0, len(s)]`` choosing per string
            (``trace`` holds the requested variables, ``initial=True``).
        batch_size: strings per forward pass (strings are batched in order of length to limit padding).
        dtype: storage dtype of the activations (``torch.float32``/``torch.float16`` or numpy).
        seed: seeds the sampling spec (unless it has its own) and the position subsample.
        vocab: object with ``encode(s) -> list[int]``, ``BOS``/``PAD`` ids (defaults to
            ``languages.datasets.Vocab(language.alphabet)``; missing ids default to PAD=0, BOS=1).
        categorical / numeric: force a variable's kind (see :mod:`probe.labels` for the default rule).
    """
    sites, variables = _names(sites), _names(variables)
    _check_sites(model, sites)
    store_dtype = _numpy_dtype(dtype)
    strings = _resolve_strings(language, strings_or_spec, seed)
    vocab = vocab if vocab is not None else _default_vocab(language)
    plan = _plan(language, strings, variables, positions, seed)
    batches = _batches(plan, batch_size)
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415  (optional dependency)

        batches = tqdm(batches, desc="collect", unit="batch")
    out = _Gathered(n=len(plan.seq_id), store_dtype=store_dtype)
    device = _model_device(model)
    with _evaluating(model), torch.no_grad():
        for sids in batches:
            rows, b_idx, p_idx = plan.rows_of(sids)
            width = int(p_idx.max()) + 1
            tokens = _tokens(vocab, [strings[i] for i in sids], width)
            cache = _run(model, tokens.to(device), sites)
            out.put(rows, cache, b_idx, p_idx, tokens)
            del cache
    return _collection(model, language, strings, vocab, sites, plan, out, positions, seed, store_dtype,
                       categorical, numeric)


@dataclasses.dataclass
class _Plan:
    """The kept rows, sorted by (seq_id, pos), with their raw label values."""

    seq_id: np.ndarray  # [n] index into the strings
    pos: np.ndarray  # [n] model position (0 = BOS)
    raw: dict[str, list]  # variable -> n trace values
    lengths: np.ndarray  # [n_strings] len(s)

    @property
    def total(self) -> int:
        """Positions of all strings (BOS included): the tokens a run of every string sees."""
        return int((self.lengths + 1).sum())

    def rows_of(self, sids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For a batch of strings: output rows, batch index and position of each of their kept rows."""
        bounds = np.searchsorted(self.seq_id, [sids, sids + 1])
        rows = np.concatenate([np.arange(lo, hi) for lo, hi in bounds.T])
        b_idx = np.repeat(np.arange(len(sids)), bounds[1] - bounds[0])
        return rows, b_idx, self.pos[rows]


def _plan(language, strings: list[str], variables: list[str], positions, seed: int) -> _Plan:
    lengths = np.array([len(s) for s in strings], dtype=np.int64)
    chosen = (_chosen_by_callable(language, strings, variables, positions) if callable(positions)
              else _chosen_by_draw(lengths, positions, seed))
    raw: dict[str, list] = {v: [] for v in variables}
    for sid, pos in enumerate(chosen):
        if len(pos) and variables:
            trace = _trace(language, strings[sid], variables)
            for v in variables:
                raw[v].extend(trace[v][p] for p in pos.tolist())
    seq_id = np.repeat(np.arange(len(strings), dtype=np.int64), [len(p) for p in chosen])
    pos = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    return _Plan(seq_id=seq_id, pos=pos.astype(np.int64), raw=raw, lengths=lengths)


def _chosen_by_draw(lengths: np.ndarray, positions, seed: int) -> list[np.ndarray]:
    """Kept positions of each string for ``"all"`` or an int (flat indices drawn over all strings)."""
    offsets = np.concatenate([[0], np.cumsum(lengths + 1)])
    total = int(offsets[-1])
    if isinstance(positions, str):
        if positions != "all":
            raise ValueError(f"positions must be 'all', an int or a callable, got {positions!r}")
        kept = np.arange(total, dtype=np.int64)
    elif int(positions) < 0:
        raise ValueError("positions must be non-negative")
    elif int(positions) >= total:
        kept = np.arange(total, dtype=np.int64)
    else:
        kept = np.sort(np.random.default_rng(seed).choice(total, size=int(positions), replace=False))
    bounds = np.searchsorted(kept, offsets)
    return [kept[lo:hi] - offsets[i] for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))]


def _chosen_by_callable(language, strings, variables, positions) -> list[np.ndarray]:
    out = []
    for s in strings:
        pos = np.unique(np.asarray(list(positions(s, _trace(language, s, variables))), dtype=np.int64))
        if pos.size and (pos.min() < 0 or pos.max() > len(s)):
            raise ValueError(f"positions callable returned a position outside [0, {len(s)}]")
        out.append(pos)
    return out


def _batches(plan: _Plan, batch_size: int) -> list[np.ndarray]:
    """Strings in order of length, ``batch_size`` at a time, less those with no kept row (their batch
    is otherwise unchanged, so the batches do not depend on which rows are kept)."""
    order = np.argsort(plan.lengths, kind="stable")
    has_rows = np.zeros(len(order), dtype=bool)
    has_rows[plan.seq_id] = True
    chunks = (order[i:i + batch_size] for i in range(0, len(order), batch_size))
    return [c[has_rows[c]] for c in chunks if has_rows[c].any()]


def _tokens(vocab, strings: list[str], width: int) -> torch.Tensor:
    """[B, width] int64: BOS, then each string's first ``width - 1`` symbols, right-padded with PAD
    (:func:`languages.vocab.model_inputs` with this vocabulary's BOS and PAD ids)."""
    rows = [list(vocab.encode(s[:width - 1])) for s in strings]
    return torch.from_numpy(model_inputs(rows, width=width, pad=int(getattr(vocab, "PAD", PAD_ID)),
                                         bos=int(getattr(vocab, "BOS", BOS_ID))))


def _run(model, tokens: torch.Tensor, sites: list[str]) -> dict[str, torch.Tensor]:
    """The cached tensors at ``sites``, each checked to be ``[B, L, ...]``."""
    _, cache = model.run_with_cache(tokens, names_filter=list(sites))
    cache = getattr(cache, "cache_dict", cache)  # ActivationCache or plain dict
    for site in sites:
        if site not in cache:
            raise KeyError(f"hook {site!r} did not fire during the forward pass")
        t = cache[site]
        if t.dim() < 2 or tuple(t.shape[:2]) != tuple(tokens.shape):
            raise ValueError(f"site {site!r} has shape {tuple(t.shape)}; collect needs [B={tokens.shape[0]}, "
                             f"L={tokens.shape[1]}, ...]")
    return {site: cache[site] for site in sites}


@dataclasses.dataclass
class _Gathered:
    """The output arrays, filled batch by batch at the plan's rows (allocated at the first batch, when
    each site's width is known)."""

    n: int
    store_dtype: np.dtype
    acts: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    site_shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    token: np.ndarray | None = None

    def put(self, rows, cache: dict[str, torch.Tensor], b_idx, p_idx, tokens: torch.Tensor) -> None:
        if self.token is None:
            self.token = np.empty(self.n, dtype=np.int64)
        self.token[rows] = tokens.numpy()[b_idx, p_idx]
        bt = torch.as_tensor(b_idx, device=next(iter(cache.values())).device)
        pt = torch.as_tensor(p_idx, device=bt.device)
        for site, t in cache.items():
            self.site_shapes.setdefault(site, tuple(int(x) for x in t.shape[2:]) or (1,))
            feats = t[bt, pt].reshape(len(rows), -1).float().cpu().numpy()
            if site not in self.acts:
                self.acts[site] = np.empty((self.n, feats.shape[1]), dtype=self.store_dtype)
            self.acts[site][rows] = feats


def _collection(model, language, strings, vocab, sites, plan: _Plan, out: _Gathered, positions, seed,
                store_dtype, categorical, numeric) -> Collection:
    """The :class:`Collection` of a plan and its gathered arrays, with the file header's metadata."""
    acts = {s: out.acts.get(s, np.zeros((0, 0), dtype=store_dtype)) for s in sites}
    labels, kinds, classes = encode_labels(plan.raw, categorical, numeric)
    alphabet = tuple(language.alphabet)
    symbol_ids = tuple(int(vocab.encode(a)[0]) for a in alphabet)
    bos_id = int(getattr(vocab, "BOS", 1))
    return Collection(
        acts=acts,
        labels=labels,
        seq_id=plan.seq_id,
        pos=plan.pos,
        token=out.token if out.token is not None else np.empty(0, dtype=np.int64),
        length=plan.lengths[plan.seq_id],
        kinds=kinds,
        classes=classes,
        strings=strings,
        alphabet=alphabet,
        vocab_size=int(getattr(vocab, "size", max(symbol_ids, default=bos_id) + 1)),
        symbol_ids=symbol_ids,
        site_shapes={s: out.site_shapes.get(s, (acts[s].shape[1],)) for s in sites},
        meta={
            "language": getattr(language, "name", type(language).__name__),
            "language_params": dict(getattr(language, "params", {}) or {}),
            "model": _model_identity(model),
            "sites": sites,
            "positions": positions if isinstance(positions, (int, str)) else "callable",
            "seed": seed,
            "dtype": str(store_dtype),
            "n_strings": len(strings),
            "tokens_seen": plan.total,
        },
    )


# ----------------------------------------------------------------------------------------------
# the slow reference
# ----------------------------------------------------------------------------------------------


def collect_reference(model, language, strings: Sequence[str], sites: Sequence[str],
                      variables: Sequence[str] = (), positions: str | int | Callable = "all", seed: int = 0,
                      vocab=None, dtype=torch.float32) -> Collection:
    """What :func:`collect` computes, the slow way: each string run alone (whole, no padding), its
    hooks read at the kept positions, one row at a time. The kept set follows the documented rule: an
    int ``k`` keeps the (string, position) pairs at ``sorted(default_rng(seed).choice(total, k,
    replace=False))`` in the list of all pairs in (string, position) order."""
    vocab = vocab if vocab is not None else _default_vocab(language)
    variables = _names(variables)
    pairs = [(i, p) for i, s in enumerate(strings) for p in range(len(s) + 1)]
    keep = set(pairs)
    if not isinstance(positions, str) and not callable(positions) and positions < len(pairs):
        keep = {pairs[j] for j in np.random.default_rng(seed).choice(len(pairs), size=positions, replace=False)}
    acts: dict[str, list] = {site: [] for site in sites}
    rows: list[tuple[int, int, int]] = []
    raw: dict[str, list] = {v: [] for v in variables}
    with _evaluating(model), torch.no_grad():
        for i, s in enumerate(strings):
            trace = language.trace(s, initial=True) if variables else {}
            if callable(positions):
                chosen = sorted(set(positions(s, {v: trace[v] for v in variables})))
            else:
                chosen = [p for p in range(len(s) + 1) if (i, p) in keep]
            if not chosen:
                continue
            ids = [int(getattr(vocab, "BOS", 1))] + list(vocab.encode(s))
            _, cache = model.run_with_cache(torch.tensor([ids], device=_model_device(model)),
                                            names_filter=list(sites))
            for p in chosen:
                for site in sites:
                    acts[site].append(cache[site][0, p].reshape(-1).float().cpu().numpy())
                rows.append((i, p, ids[p]))
                for v in variables:
                    raw[v].append(trace[v][p])
    labels, kinds, classes = encode_labels(raw)
    seq_id, pos, token = (np.array([r[k] for r in rows], dtype=np.int64) for k in range(3))
    store = _numpy_dtype(dtype)
    return Collection(
        acts={site: np.array(a, dtype=store) if a else np.zeros((0, 0), dtype=store) for site, a in acts.items()},
        labels=labels, seq_id=seq_id, pos=pos, token=token,
        length=np.array([len(strings[i]) for i in seq_id], dtype=np.int64),
        kinds=kinds, classes=classes, strings=list(strings), alphabet=tuple(language.alphabet))


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _names(names: str | Sequence[str]) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def _check_sites(model, sites: list[str]) -> None:
    if not sites:
        raise ValueError("collect needs at least one site")
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is not None:
        missing = [s for s in sites if s not in hook_dict]
        if missing:
            raise KeyError(f"unknown hook site(s) {missing}; the model has e.g. {sorted(hook_dict)[:8]}")


def _resolve_strings(language, strings_or_spec, seed: int) -> list[str]:
    if isinstance(strings_or_spec, dict):
        spec = dict(strings_or_spec)
        spec.setdefault("seed", seed)
        strings = list(language.sample(**spec))
    elif isinstance(strings_or_spec, str):
        raise TypeError("strings_or_spec must be a list of strings or a sampling dict, not one string")
    else:
        strings = list(strings_or_spec)
    if not strings:
        raise ValueError("no strings to collect")
    return strings


def _default_vocab(language):
    return Vocab(language.alphabet)


def _numpy_dtype(dtype) -> np.dtype:
    if isinstance(dtype, torch.dtype):
        dtype = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}[dtype]
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"storage dtype must be floating, got {dt}")
    return dt


def _model_device(model) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@contextlib.contextmanager
def _evaluating(model):
    """The model in eval mode for the block; the mode it had is restored after."""
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


def _model_identity(model) -> dict[str, Any]:
    """What names the model: ``trained_models.load`` sets ``name`` and the card's sha256."""
    ident: dict[str, Any] = {"class": type(model).__name__,
                             "name": getattr(model, "model_name", None),
                             "card_sha256": getattr(model, "card_sha256", None)}
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        ident["config"] = cfg.to_dict()
    return ident


def _trace(language, s: str, variables: list[str]) -> dict[str, list]:
    """The requested variables of ``language.trace(s, initial=True)``, checked ({} without variables)."""
    if not variables:
        return {}
    tr = language.trace(s, initial=True)
    out = {}
    for v in variables:
        if v not in tr:
            raise KeyError(f"variable {v!r} not in the trace of {type(language).__name__} "
                           f"(has {sorted(tr)})")
        vals = tr[v]
        if len(vals) != len(s) + 1:
            raise ValueError(f"trace variable {v!r} has {len(vals)} entries for a string of length "
                             f"{len(s)}; expected len(s) + 1 (trace(s, initial=True))")
        out[v] = vals
    return out
