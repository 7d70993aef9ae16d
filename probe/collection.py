"""The :class:`Collection`: activations at hook sites and automaton labels for kept positions, its files
(``.npz`` / ``.safetensors``, readable without the toolkit) and its analysis frames (pandas, xarray).

:func:`probe.collect.collect` builds one; label encoding is :mod:`probe.labels`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from languages.io import atomic_write

from .labels import value_key

__all__ = ["Collection", "FORMAT"]

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
        lookup = {value_key(v): i for i, v in enumerate(classes)}
        remap = np.array([lookup.get(value_key(v), -1) for v in self.classes[var]], dtype=np.int64)
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
        path = os.fspath(path)
        header = json.dumps(self._header(), default=_jsonable)
        arrays = self._arrays()
        if path.endswith(".safetensors"):
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
