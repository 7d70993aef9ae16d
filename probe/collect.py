"""Collect hook activations aligned position by position with the automaton's state labels.

Glossary: B batch, L positions (= 1 + string length: BOS then one position per symbol), n kept
positions, d flattened features of a site.

Alignment (docs/interfaces.md): a model input is ``[BOS] + vocab.encode(s)``; model position ``i`` has
read ``s[:i]`` and is labelled with entry ``i`` of ``language.trace(s, initial=True)`` (entry 0 is the
start state, seen at BOS).

Memory: the strings (and their lengths) are known before the model runs, so the kept positions are
drawn up front -- exactly ``min(positions, total)`` flat indices, uniformly without replacement over all
positions of all strings, from ``numpy.random.default_rng(seed)`` -- and the output arrays are allocated
once. Batches are then streamed through ``model.run_with_cache(tokens, names_filter=sites)`` under
``torch.no_grad``; only the kept rows of each batch's cache are copied out and the cache is dropped
before the next batch. Peak memory is therefore the kept rows plus one batch's cache, independent of
the number of tokens seen. The kept set does not depend on ``batch_size``. Strings are batched in
order of length; a string with no kept position is not run, and each string is cut after its last
kept position (the models are causal: later tokens cannot change earlier activations).

Label encoding (documented choice):

* Numeric variables (ints/floats: ``depth``, counters) are stored as float64; ``None`` becomes NaN and
  the probes drop NaN rows (masking).
* Categorical variables (strings, booleans, variable-length tuples such as ``stack``, and the names in
  :data:`CATEGORICAL_NAMES` even when their values are ints, e.g. a DFA ``state``) become int64 codes
  into ``Collection.classes[var]`` (sorted values). ``None`` -- e.g. the top of an empty stack, or the
  flip-flop bit before any ``w`` -- is a class of its own (it is a real automaton state), listed last.
* Tuples of numbers of one fixed length (``counter``) become numeric columns ``counter[0]``,
  ``counter[1]``, ...
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "CATEGORICAL_NAMES",
    "Collection",
    "collect",
    "layer_of",
    "sites_matching",
]

#: Variables that are categorical even when their values are integers.
CATEGORICAL_NAMES = frozenset(
    {"state", "dfa_state", "top", "stack", "phase", "stored", "stored_bit", "instruction",
     "last_instruction"}
)

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
# Collection
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Collection:
    """Activations and labels for ``n`` kept positions, sorted by (seq_id, pos).

    acts:    site -> [n, d] array (float32 or float16)
    labels:  variable -> [n] array (int64 codes for categorical, float64 with NaN for numeric)
    kinds:   variable -> "categorical" | "numeric"
    classes: variable -> list of values (categorical only); code i means ``classes[var][i]``
    seq_id:  [n] index into ``strings``;  pos: [n] model position (0 = BOS);
    token:   [n] input token id at that position (BOS at 0);  length: [n] len(string)
    site_shapes: site -> the per-position shape before flattening (``hook_ssm_state``: ``(E, N)``)
    meta:    how it was collected: language name and parameters, model name and card hash, sites,
             positions, seed, dtype

    Files (:meth:`save`, :meth:`load`): ``.npz`` (numpy) or ``.safetensors``, each readable with that
    library alone. Arrays are keyed by name -- ``acts/<site>`` in the site's original shape
    ``[n, *site_shapes[site]]``, ``labels/<variable>``, ``seq_id``, ``pos``, ``token``, ``length`` --
    and a JSON ``header`` (an npz string entry; safetensors metadata) holds everything else:
    ``kinds``, ``classes``, ``strings``, ``alphabet``, the site shapes and ``meta``. Reading one
    without the toolkit::

        z = np.load("c.npz"); header = json.loads(str(z["header"])); z["acts/blocks.0.mixer.hook_ssm_state"]
        from safetensors.numpy import load_file, safe_open  # .safetensors: the same keys
    """

    acts: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    seq_id: np.ndarray
    pos: np.ndarray
    token: np.ndarray
    length: np.ndarray
    kinds: dict[str, str] = dataclasses.field(default_factory=dict)
    classes: dict[str, list] = dataclasses.field(default_factory=dict)
    strings: list[str] = dataclasses.field(default_factory=list)
    alphabet: tuple[str, ...] = ()
    vocab_size: int = 0
    symbol_ids: tuple[int, ...] = ()  # token id of each alphabet symbol
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    site_shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    # -- basic -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.seq_id.shape[0])

    @property
    def sites(self) -> list[str]:
        return list(self.acts)

    @property
    def variables(self) -> list[str]:
        return list(self.labels)

    def subset(self, idx) -> "Collection":
        """Rows ``idx`` (indices or boolean mask); strings and metadata are shared."""
        idx = np.asarray(idx)
        return dataclasses.replace(
            self,
            acts={k: v[idx] for k, v in self.acts.items()},
            labels={k: v[idx] for k, v in self.labels.items()},
            seq_id=self.seq_id[idx],
            pos=self.pos[idx],
            token=self.token[idx],
            length=self.length[idx],
        )

    def split_by_sequence(self, test_size: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Row indices (train, test) such that no sequence has rows on both sides.

        ``test_size`` is the fraction of *sequences* (among those with kept rows) put in test; at least
        one sequence goes to each side when there are two or more.
        """
        seqs = np.unique(self.seq_id)
        if len(seqs) < 2:
            raise ValueError("split_by_sequence needs rows from at least two sequences")
        rng = np.random.default_rng(seed)
        n_test = int(round(test_size * len(seqs)))
        n_test = min(max(n_test, 1), len(seqs) - 1)
        test_seqs = rng.choice(seqs, size=n_test, replace=False)
        is_test = np.isin(self.seq_id, test_seqs)
        return np.flatnonzero(~is_test), np.flatnonzero(is_test)

    # -- labels ----------------------------------------------------------------------------------
    def codes_for(self, var: str, classes: Sequence) -> np.ndarray:
        """This collection's labels of categorical ``var`` re-coded into another ``classes`` list
        (e.g. the training collection's); values absent from ``classes`` get code -1."""
        if self.kinds.get(var) != "categorical":
            return self.labels[var]
        lookup = {_key(v): i for i, v in enumerate(classes)}
        remap = np.array([lookup.get(_key(v), -1) for v in self.classes[var]], dtype=np.int64)
        return remap[self.labels[var]] if len(remap) else self.labels[var].copy()

    # -- input-only features ---------------------------------------------------------------------
    def token_onehot(self) -> np.ndarray:
        """[n, vocab_size] one-hot of the current input token (the token-embedding baseline)."""
        size = max(self.vocab_size, int(self.token.max(initial=0)) + 1)
        out = np.zeros((len(self), size), dtype=np.float32)
        out[np.arange(len(self)), self.token] = 1.0
        return out

    def prefix_counts(self) -> np.ndarray:
        """[n, |alphabet|] counts of each alphabet symbol in ``s[:pos]`` (what position ``pos`` has read)."""
        index = {a: j for j, a in enumerate(self.alphabet)}
        out = np.zeros((len(self), len(self.alphabet)), dtype=np.float32)
        order = np.argsort(self.seq_id, kind="stable")
        sids = self.seq_id[order]
        bounds = np.flatnonzero(np.diff(sids)) + 1
        for rows in np.split(order, bounds):
            if len(rows) == 0:
                continue
            s = self.strings[int(self.seq_id[rows[0]])]
            onehot = np.zeros((len(s) + 1, len(self.alphabet)), dtype=np.float32)
            onehot[np.arange(1, len(s) + 1), [index[c] for c in s]] = 1.0
            out[rows] = np.cumsum(onehot, axis=0)[self.pos[rows]]
        return out

    # -- persistence -----------------------------------------------------------------------------
    def site_shape(self, site: str) -> tuple[int, ...]:
        """Per-position shape of ``site`` before flattening (``(d,)`` when not recorded)."""
        return tuple(self.site_shapes.get(site, self.acts[site].shape[1:]))

    def _header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "sites": list(self.acts),
            "site_shapes": {s: list(self.site_shape(s)) for s in self.acts},
            "variables": list(self.labels),
            "kinds": self.kinds,
            "classes": {k: [_jsonable(v) for v in vals] for k, vals in self.classes.items()},
            "strings": list(self.strings),
            "alphabet": list(self.alphabet),
            "vocab_size": self.vocab_size,
            "symbol_ids": list(self.symbol_ids),
            "meta": self.meta,
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"acts/{s}": np.ascontiguousarray(a.reshape(len(a), *self.site_shape(s)))
                  for s, a in self.acts.items()}
        arrays.update({f"labels/{v}": np.ascontiguousarray(a) for v, a in self.labels.items()})
        arrays.update(seq_id=self.seq_id, pos=self.pos, token=self.token, length=self.length)
        return arrays

    def save(self, path: str | os.PathLike) -> None:
        """Write ``path`` (``.npz`` or ``.safetensors``, see the class docstring) atomically."""
        from trained_models.io import atomic_write

        path = os.fspath(path)
        header = json.dumps(self._header(), default=_jsonable)
        arrays = self._arrays()
        if path.endswith(".safetensors"):
            from safetensors.numpy import save_file

            def write(tmp: str) -> None:
                save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp, metadata={"header": header})
        elif path.endswith(".npz"):
            def write(tmp: str) -> None:
                with open(tmp, "wb") as fh:  # a file handle: np.savez would add ".npz" to a temp name
                    np.savez(fh, header=np.array(header), **arrays)
        else:
            raise ValueError(f"Collection.save: {path!r} must end in .npz or .safetensors")
        atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Collection":
        """Read a file written by :meth:`save` (also the earlier ``act_<i>``/``label_<i>`` npz form)."""
        path = os.fspath(path)
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="numpy") as f:
                header = json.loads((f.metadata() or {})["header"])
                z = {k: f.get_tensor(k) for k in f.keys()}
            return cls._from_parts(header, z)
        with np.load(path, allow_pickle=False) as npz:
            header = json.loads(str(npz["header"]))
            if header.get("format") == FORMAT_V1:
                z = {k: npz[k] for k in npz.files if k != "header"}
                z.update({f"acts/{s}": z.pop(f"act_{i}") for i, s in enumerate(header["sites"])})
                z.update({f"labels/{v}": z.pop(f"label_{i}") for i, v in enumerate(header["variables"])})
                header["strings"] = [str(x) for x in z.pop("strings")]
            else:
                z = {k: npz[k] for k in npz.files if k != "header"}
        return cls._from_parts(header, z)

    @classmethod
    def _from_parts(cls, header: dict[str, Any], z: dict[str, np.ndarray]) -> "Collection":
        if header.get("format") not in (FORMAT, FORMAT_V1):
            raise ValueError(f"not a Collection file (format {header.get('format')!r}, expected {FORMAT!r})")
        acts = {s: z[f"acts/{s}"] for s in header["sites"]}
        return cls(
            acts={s: a.reshape(len(a), -1) for s, a in acts.items()},
            labels={v: z[f"labels/{v}"] for v in header["variables"]},
            seq_id=z["seq_id"], pos=z["pos"], token=z["token"], length=z["length"],
            kinds=dict(header["kinds"]),
            classes={k: [_from_json(v) for v in vals] for k, vals in header["classes"].items()},
            strings=[str(x) for x in header["strings"]],
            alphabet=tuple(header["alphabet"]),
            vocab_size=int(header["vocab_size"]),
            symbol_ids=tuple(header["symbol_ids"]),
            meta=header["meta"],
            site_shapes={s: tuple(v) for s, v in header.get("site_shapes", {}).items()}
            or {s: a.shape[1:] for s, a in acts.items()},
        )

    # -- analysis frames -------------------------------------------------------------------------
    def _decoded(self, var: str) -> list:
        if self.kinds.get(var) != "categorical":
            return list(self.labels[var])
        vals = self.classes[var]
        return [vals[c] if 0 <= c < len(vals) else None for c in self.labels[var].tolist()]

    def to_pandas(self, sites: Sequence[str] | None = ()):
        """One row per kept position: ``seq_id``, ``pos``, ``token``, ``length``, every label (categorical
        ones decoded to their values) and, for ``sites`` (default none; ``None``: all), one column per
        feature named ``"<site>[i]"`` (``[i,j]`` for multi-dimensional sites). Needs pandas."""
        pd = _optional("pandas", "to_pandas")
        cols: dict[str, Any] = {"seq_id": self.seq_id, "pos": self.pos, "token": self.token, "length": self.length}
        for v in self.labels:
            cols[v] = self._decoded(v) if self.kinds.get(v) == "categorical" else self.labels[v]
        frame = pd.DataFrame(cols)
        chosen = list(self.acts) if sites is None else list(sites)
        parts = [frame]
        for s in chosen:
            names = [f"{s}[{','.join(map(str, ix))}]" for ix in np.ndindex(*self.site_shape(s))]
            parts.append(pd.DataFrame(self.acts[s], columns=names))
        return pd.concat(parts, axis=1) if len(parts) > 1 else frame

    def to_xarray(self):
        """An ``xarray.Dataset``: each site a variable of dims ``("row", "<site>/d0", ...)`` in its original
        shape; labels, ``seq_id``, ``pos``, ``token``, ``length`` as ``row`` coordinates (categorical labels
        decoded); the header's language/model description in ``attrs``. Needs xarray."""
        xr = _optional("xarray", "to_xarray")
        data = {}
        for s, a in self.acts.items():
            shape = self.site_shape(s)
            data[s] = (("row",) + tuple(f"{s}/d{i}" for i in range(len(shape))), a.reshape(len(a), *shape))
        coords: dict[str, Any] = {k: ("row", getattr(self, k)) for k in ("seq_id", "pos", "token", "length")}
        for v in self.labels:
            vals = self._decoded(v) if self.kinds.get(v) == "categorical" else self.labels[v]
            coords[v] = ("row", np.array([_jsonable(x) if not isinstance(x, tuple) else repr(x) for x in vals],
                                         dtype=object if self.kinds.get(v) == "categorical" else None))
        attrs = {"format": FORMAT, "meta": json.dumps(self.meta, default=_jsonable),
                 "alphabet": "".join(self.alphabet)}
        return xr.Dataset(data, coords=coords, attrs=attrs)


FORMAT = "automata_lens.probe.Collection/2"
FORMAT_V1 = "automata_lens.probe.Collection/1"


def _optional(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"Collection.{what} needs {module}, which is not installed: pip install {module} "
                          "(or pip install 'automata-lens[data]')") from None


def _jsonable(v):
    if isinstance(v, tuple):
        return {"tuple": [_jsonable(x) for x in v]}
    if isinstance(v, np.generic):
        return v.item()
    return v


def _from_json(v):
    if isinstance(v, dict) and "tuple" in v:
        return tuple(_from_json(x) for x in v["tuple"])
    return v


def _key(v):
    """Hashable, type-aware identity of a label value (so 1 and '1' and True stay distinct)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, tuple):
        return ("tuple", tuple(_key(x) for x in v))
    return (type(v).__name__, v)


def _sort_key(v):
    if v is None:
        return (1, "", "")
    return (0, type(v).__name__, repr(v) if isinstance(v, tuple) else v)


# ----------------------------------------------------------------------------------------------
# collect
# ----------------------------------------------------------------------------------------------


def _resolve_strings(language, strings_or_spec, seed: int) -> list[str]:
    if isinstance(strings_or_spec, dict):
        spec = dict(strings_or_spec)
        spec.setdefault("seed", seed)
        return list(language.sample(**spec))
    if isinstance(strings_or_spec, str):
        raise TypeError("strings_or_spec must be a list of strings or a sampling dict, not one string")
    return list(strings_or_spec)


def _default_vocab(language):
    from languages.datasets import Vocab  # noqa: PLC0415  (lower layer; imported lazily)

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
        categorical / numeric: force a variable's kind (see module docstring for the default rule).
    """
    sites = [sites] if isinstance(sites, str) else list(sites)
    variables = [variables] if isinstance(variables, str) else list(variables)
    if not sites:
        raise ValueError("collect needs at least one site")
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is not None:
        missing = [s for s in sites if s not in hook_dict]
        if missing:
            raise KeyError(f"unknown hook site(s) {missing}; the model has e.g. {sorted(hook_dict)[:8]}")
    store_dtype = _numpy_dtype(dtype)
    strings = _resolve_strings(language, strings_or_spec, seed)
    if not strings:
        raise ValueError("no strings to collect")
    vocab = vocab if vocab is not None else _default_vocab(language)
    pad_id = int(getattr(vocab, "PAD", 0))
    bos_id = int(getattr(vocab, "BOS", 1))
    alphabet = tuple(language.alphabet)
    symbol_ids = tuple(int(vocab.encode(a)[0]) for a in alphabet)
    vocab_size = int(getattr(vocab, "size", max(symbol_ids, default=bos_id) + 1))

    lengths = np.array([len(s) for s in strings], dtype=np.int64)
    n_pos = lengths + 1
    offsets = np.concatenate([[0], np.cumsum(n_pos)])
    total = int(offsets[-1])

    # Kept flat indices, drawn up front (None = decided per string by a callable).
    if callable(positions):
        kept = None
    elif isinstance(positions, str):
        if positions != "all":
            raise ValueError(f"positions must be 'all', an int or a callable, got {positions!r}")
        kept = np.arange(total, dtype=np.int64)
    else:
        k = int(positions)
        if k < 0:
            raise ValueError("positions must be non-negative")
        if k >= total:
            kept = np.arange(total, dtype=np.int64)
        else:
            kept = np.sort(np.random.default_rng(seed).choice(total, size=k, replace=False))

    # Output buffers: preallocated when the kept set is known, else per-batch pieces.
    n_keep = None if kept is None else len(kept)
    acts: dict[str, np.ndarray] = {}
    site_shapes: dict[str, tuple[int, ...]] = {}
    pieces: dict[str, list] = {s: [] for s in sites}
    raw: dict[str, list] = {v: [None] * n_keep if n_keep is not None else [] for v in variables}
    seq_id = np.empty(n_keep or 0, dtype=np.int64)
    pos = np.empty(n_keep or 0, dtype=np.int64)
    token = np.empty(n_keep or 0, dtype=np.int64)
    meta_rows: list[np.ndarray] = []  # callable mode: [seq_id, pos, token] blocks in output order

    order = np.argsort(lengths, kind="stable")
    device = _model_device(model)
    was_training = getattr(model, "training", False)
    model.eval()
    iterator = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        iterator = tqdm(iterator, desc="collect", unit="batch")
    try:
        with torch.no_grad():
            for start in iterator:
                # Which (string, position) pairs to keep, and where they go in the output. Strings with
                # nothing to keep are not run; each string is cut after its last kept position (the
                # models are causal, so later tokens cannot change earlier activations).
                batch, sel_b, sel_p, traces = [], [], [], {}
                for sid in order[start:start + batch_size]:
                    s = strings[sid]
                    if kept is None:
                        tr = _trace(language, s, variables, need=True)
                        chosen = np.unique(np.asarray(list(positions(s, tr)), dtype=np.int64))
                        if chosen.size and (chosen.min() < 0 or chosen.max() > len(s)):
                            raise ValueError(f"positions callable returned a position outside [0, {len(s)}]")
                        rows = None
                    else:
                        lo = np.searchsorted(kept, offsets[sid])
                        hi = np.searchsorted(kept, offsets[sid + 1])
                        chosen = kept[lo:hi] - offsets[sid]
                        rows = np.arange(lo, hi)
                        tr = _trace(language, s, variables, need=len(chosen) > 0)
                    if len(chosen) == 0:
                        continue
                    traces[int(sid)] = (tr, chosen, rows)
                    sel_b.append(np.full(len(chosen), len(batch), dtype=np.int64))
                    sel_p.append(chosen)
                    batch.append(int(sid))
                if not batch:
                    continue
                batch = np.asarray(batch, dtype=np.int64)
                b_idx = np.concatenate(sel_b)
                p_idx = np.concatenate(sel_p)

                width = int(p_idx.max()) + 1
                tok = torch.full((len(batch), width), pad_id, dtype=torch.long)
                for j, sid in enumerate(batch):
                    ids = vocab.encode(strings[sid][:width - 1])
                    tok[j, 0] = bos_id
                    if len(ids):
                        tok[j, 1:len(ids) + 1] = torch.as_tensor(ids, dtype=torch.long)
                _, cache = model.run_with_cache(tok.to(device), names_filter=list(sites))
                cache = getattr(cache, "cache_dict", cache)  # ActivationCache or plain dict
                bt = torch.as_tensor(b_idx, device=device)
                pt = torch.as_tensor(p_idx, device=device)
                feats = {}
                for site in sites:
                    if site not in cache:
                        raise KeyError(f"hook {site!r} did not fire during the forward pass")
                    t = cache[site]
                    if t.dim() < 2 or t.shape[0] != len(batch) or t.shape[1] != width:
                        raise ValueError(
                            f"site {site!r} has shape {tuple(t.shape)}; collect needs [B={len(batch)}, "
                            f"L={width}, ...]")
                    site_shapes.setdefault(site, tuple(int(x) for x in t.shape[2:]) or (1,))
                    feats[site] = t[bt, pt].reshape(len(b_idx), -1).float().cpu().numpy()
                del cache, t, _
                tok_np = tok.numpy()[b_idx, p_idx]

                if kept is not None:
                    # ``traces`` keeps batch order, the same order as the pieces of b_idx / p_idx.
                    out = np.concatenate([v[2] for v in traces.values()])
                    for site in sites:
                        if site not in acts:
                            acts[site] = np.empty((n_keep, feats[site].shape[1]), dtype=store_dtype)
                        acts[site][out] = feats[site]
                    seq_id[out] = batch[b_idx]
                    pos[out] = p_idx
                    token[out] = tok_np
                    for tr, chosen, rows in traces.values():
                        for v in variables:
                            vals, dst = tr[v], raw[v]
                            for r, p in zip(rows.tolist(), chosen.tolist()):
                                dst[r] = vals[p]
                else:
                    for site in sites:
                        pieces[site].append(feats[site].astype(store_dtype, copy=False))
                    meta_rows.append(np.stack([batch[b_idx], p_idx, tok_np]))
                    for tr, chosen, _rows in traces.values():
                        for v in variables:
                            vals = tr[v]
                            raw[v].extend(vals[p] for p in chosen.tolist())
                del feats, traces
    finally:
        if was_training:
            model.train()

    if kept is None:
        # Sort the per-batch pieces into (seq_id, pos) order.
        if meta_rows:
            m = np.concatenate(meta_rows, axis=1)
        else:
            m = np.zeros((3, 0), dtype=np.int64)
        perm = np.lexsort((m[1], m[0]))
        seq_id, pos, token = m[0][perm], m[1][perm], m[2][perm]
        for site in sites:
            acts[site] = (np.concatenate(pieces[site])[perm] if pieces[site]
                          else np.zeros((0, 0), dtype=store_dtype))
            pieces[site] = []
        for v in variables:
            raw[v] = [raw[v][i] for i in perm]
    elif n_keep == 0:
        acts = {site: np.zeros((0, 0), dtype=store_dtype) for site in sites}

    labels, kinds, classes = _encode_labels(raw, set(categorical), set(numeric))
    return Collection(
        acts=acts,
        labels=labels,
        seq_id=seq_id,
        pos=pos,
        token=token,
        length=lengths[seq_id],
        kinds=kinds,
        classes=classes,
        strings=strings,
        alphabet=alphabet,
        vocab_size=vocab_size,
        symbol_ids=symbol_ids,
        site_shapes={s: site_shapes.get(s, (acts[s].shape[1],)) for s in sites},
        meta={
            "language": getattr(language, "name", type(language).__name__),
            "language_params": dict(getattr(language, "params", {}) or {}),
            "model": _model_identity(model),
            "sites": sites,
            "positions": positions if isinstance(positions, (int, str)) else "callable",
            "seed": seed,
            "dtype": str(store_dtype),
            "n_strings": len(strings),
            "tokens_seen": total,
        },
    )


def _model_identity(model) -> dict[str, Any]:
    """What names the model: ``trained_models.load`` sets ``name`` and the card's sha256."""
    ident: dict[str, Any] = {"class": type(model).__name__,
                             "name": getattr(model, "model_name", None),
                             "card_sha256": getattr(model, "card_sha256", None)}
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        ident["config"] = cfg.to_dict()
    return ident


def _trace(language, s: str, variables: list[str], need: bool) -> dict[str, list]:
    if not variables or not need:
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


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _encode_labels(raw: dict[str, list], categorical: set, numeric: set):
    labels: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    classes: dict[str, list] = {}
    for var, vals in raw.items():
        present = [v for v in vals if v is not None]
        force_cat = var in categorical or (var in CATEGORICAL_NAMES and var not in numeric)
        tuple_lens = {len(v) for v in present if isinstance(v, tuple)}
        if (not force_cat and present and all(isinstance(v, tuple) for v in present)
                and len(tuple_lens) == 1 and all(_is_number(x) for v in present for x in v)):
            width = tuple_lens.pop()
            arr = np.full((len(vals), width), np.nan)
            for i, v in enumerate(vals):
                if v is not None:
                    arr[i] = v
            for c in range(width):
                name = f"{var}[{c}]"
                labels[name], kinds[name] = arr[:, c].copy(), "numeric"
            continue
        if var in numeric or (not force_cat and present and all(_is_number(v) for v in present)):
            labels[var] = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
            kinds[var] = "numeric"
            continue
        uniq = {}
        for v in vals:
            uniq.setdefault(_key(v), v)
        try:
            values = sorted(uniq.values(), key=_sort_key)
        except TypeError:
            values = sorted(uniq.values(), key=lambda v: (v is None, repr(v)))
        code = {_key(v): i for i, v in enumerate(values)}
        labels[var] = np.array([code[_key(v)] for v in vals], dtype=np.int64)
        kinds[var] = "categorical"
        classes[var] = values
    return labels, kinds, classes
