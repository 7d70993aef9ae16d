"""Label encoding: automaton trace values -> the arrays a :class:`probe.collection.Collection` stores.

* Numeric variables (ints/floats: ``depth``, counters) are stored as float64; ``None`` becomes NaN and
  the probes drop NaN rows (masking).
* Categorical variables (strings, booleans, variable-length tuples such as ``stack``, and the names in
  :data:`CATEGORICAL_NAMES` even when their values are ints, e.g. a DFA ``state``) become int64 codes
  into ``classes[var]`` (sorted values). ``None`` -- e.g. the top of an empty stack, or the flip-flop
  bit before any ``w`` -- is a class of its own (it is a real automaton state), listed last.
* Tuples of numbers of one fixed length (``counter``) become numeric columns ``counter[0]``,
  ``counter[1]``, ...
"""
from __future__ import annotations

import numpy as np

__all__ = ["CATEGORICAL_NAMES", "encode_labels", "value_key"]

#: Variables that are categorical even when their values are integers.
CATEGORICAL_NAMES = frozenset(
    {"state", "dfa_state", "top", "stack", "phase", "stored", "stored_bit", "instruction",
     "last_instruction"}
)


def value_key(v):
    """Hashable, type-aware identity of a label value (so 1 and '1' and True stay distinct)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, tuple):
        return ("tuple", tuple(value_key(x) for x in v))
    return (type(v).__name__, v)


def _sort_key(v):
    if v is None:
        return (1, "", "")
    return (0, type(v).__name__, repr(v) if isinstance(v, tuple) else v)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def encode_labels(raw: dict[str, list], categorical=(), numeric=()):
    """``raw``: variable -> one value per row. Returns ``(labels, kinds, classes)``: variable (or
    ``name[i]`` column) -> array; -> "categorical" | "numeric"; -> sorted class values (categorical).
    ``categorical`` / ``numeric`` force a variable's kind."""
    categorical, numeric = set(categorical), set(numeric)
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
            uniq.setdefault(value_key(v), v)
        try:
            values = sorted(uniq.values(), key=_sort_key)
        except TypeError:
            values = sorted(uniq.values(), key=lambda v: (v is None, repr(v)))
        code = {value_key(v): i for i, v in enumerate(values)}
        labels[var] = np.array([code[value_key(v)] for v in vals], dtype=np.int64)
        kinds[var] = "categorical"
        classes[var] = values
    return labels, kinds, classes
