"""Token encodings, targets, state labels and length-binned splits (numpy only; no torch).

Vocabulary (:mod:`languages.vocab`, re-exported here): ``PAD = 0``, ``BOS = 1``, ``END = 2``, then the
language's symbols in alphabet order from id 3. A model input is ``[BOS] + encode(s)``; model position ``i`` has read
``s[:i]`` and predicts ``language.allowed_next(s)[i]``; a string has ``len(s) + 1`` positions.

:func:`encode_batch` returns a :class:`Batch` of numpy arrays, right-padded with PAD to the longest
string (``T = max len + 1`` positions):

==============  ==================  ==========================================================
field           shape / dtype       meaning
==============  ==================  ==========================================================
tokens          [B, T] int64        BOS, then the symbols' ids, then PAD
mask            [B, T] bool         True at the ``len(s) + 1`` real positions
lengths         [B] int64           ``len(s) + 1``
allowed         [B, T, V] bool      multi-hot of ``allowed_next(s)[i]`` (END in column 2)
membership      [B, T] bool         ``prefix_labels(s)[i]`` (whether ``s[:i]`` is a member)
next_tokens     [B, T] int64        id of ``s[i]`` for i < len(s), END at i = len(s), PAD after
labels          dict[str, list]     variable -> per string, ``trace(s, initial=True)[variable]``
strings         list[str]           the strings
vocab           Vocab               the vocabulary used
==============  ==================  ==========================================================

:func:`make_splits` draws the length-binned splits (``train``, ``bin0``, ``bin1``, ``bin2`` by default
from ``language.default_bins``) and, with ``n_dev``, a ``dev`` split drawn last from the training
window: pairwise disjoint (each split excludes every string drawn before it), deterministic for a
seed (each split has its own seed derived from ``(seed, split name)``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from .base import Language
from .vocab import BOS_ID, END_ID, FIRST_SYMBOL_ID, PAD_ID, Vocab, model_inputs  # noqa: F401 (re-exported)

__all__ = ["Vocab", "Batch", "encode_batch", "make_splits", "PAD_ID", "BOS_ID", "END_ID", "FIRST_SYMBOL_ID"]

@dataclass
class Batch:
    """Encoded strings with their targets and state labels (see the module docstring for the fields)."""

    tokens: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    allowed: np.ndarray
    membership: np.ndarray
    next_tokens: np.ndarray
    labels: dict = field(default_factory=dict)
    strings: list = field(default_factory=list)
    vocab: Optional[Vocab] = None

    def __len__(self) -> int:
        return len(self.strings)

    def label_array(self, name: str, fill: float = np.nan) -> np.ndarray:
        """Numeric label ``name`` as ``[B, T]`` float64 (``fill`` at padding and for None values);
        tuple-valued labels (``counter``) give ``[B, T, C]``."""
        rows = self.labels[name]
        B, T = self.tokens.shape
        first = next((v for r in rows for v in r if v is not None), 0)
        width = len(first) if isinstance(first, tuple) else None
        out = np.full((B, T) if width is None else (B, T, width), fill, dtype=np.float64)
        for b, r in enumerate(rows):
            vals = [fill if v is None else v for v in r]
            out[b, : len(r)] = np.asarray(vals, dtype=np.float64)
        return out


def encode_batch(
    language: Language,
    strings: Sequence[str],
    vocab: Optional[Vocab] = None,
    *,
    labels: Union[bool, Sequence[str]] = True,
) -> Batch:
    """Encode ``strings`` of ``language`` with targets and state labels (a :class:`Batch`).

    ``vocab`` defaults to ``Vocab(language.alphabet)``; it must contain every symbol of the language.
    ``labels``: True for every trace variable, False for none, or a list of variable names.
    """
    strings = list(strings)
    vocab = vocab or Vocab(language.alphabet)
    missing = [c for c in language.alphabet if c not in vocab.stoi]
    if missing:
        raise ValueError(f"the vocabulary lacks symbols {missing!r} of {language.name!r}")
    sym_to_tok = np.array([vocab.stoi[c] for c in language.alphabet], dtype=np.int64)
    cols = np.concatenate([sym_to_tok, [END_ID]])
    if labels is True:
        names = list(language.state_variables)
    elif labels is False or labels is None:
        names = []
    else:
        names = list(labels)
        bad = [v for v in names if v not in language.state_variables]
        if bad:
            raise ValueError(f"{language.name!r} has no trace variables {bad!r}; it has {language.state_variables!r}")
    B = len(strings)
    lens = np.array([len(s) for s in strings], dtype=np.int64)
    symbol_ids = [language.symbol_ids(s) for s in strings]
    tokens = model_inputs([sym_to_tok[ids] for ids in symbol_ids])
    T = tokens.shape[1]
    mask = np.zeros((B, T), dtype=bool)
    allowed = np.zeros((B, T, vocab.size), dtype=bool)
    membership = np.zeros((B, T), dtype=bool)
    next_tokens = np.full((B, T), PAD_ID, dtype=np.int64)
    out_labels: dict[str, list] = {v: [] for v in names}
    want = bool(names)
    for b, (s, ids) in enumerate(zip(strings, symbol_ids)):
        n = len(ids)
        tok = tokens[b, 1 : n + 1]
        mask[b, : n + 1] = True
        next_tokens[b, :n] = tok
        next_tokens[b, n] = END_ID
        mat, member, tr = language._analyze(ids, s, want)
        allowed[b][: n + 1, cols] = mat
        membership[b, : n + 1] = member
        for v in names:
            out_labels[v].append(tr[v])
    return Batch(tokens=tokens, mask=mask, lengths=lens + 1, allowed=allowed, membership=membership,
                 next_tokens=next_tokens, labels=out_labels, strings=strings, vocab=vocab)


def iter_batches(
    language: Language, strings: Sequence[str], batch_size: int, vocab: Optional[Vocab] = None, **kw
) -> Iterator[Batch]:
    """:func:`encode_batch` over consecutive chunks of ``batch_size`` strings."""
    for i in range(0, len(strings), batch_size):
        yield encode_batch(language, strings[i : i + batch_size], vocab, **kw)


def _split_seed(seed, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed!r}/{name}".encode()).digest()[:8], "big")


def make_splits(
    language: Language,
    n_train: Optional[int] = None,
    n_test: Optional[int] = None,
    seed=0,
    bins: Optional[dict] = None,
    *,
    n_dev: int = 0,
    allow_fewer: bool = False,
) -> dict[str, list[str]]:
    """Length-binned, pairwise-disjoint splits of member strings, deterministic for ``seed``.

    ``bins``: split name -> ``(min_len, max_len)`` (default ``language.default_bins``: train, bin0,
    bin1 and where given bin2). ``train`` is drawn first (``n_train`` strings), then every other split
    in order (``n_test`` each), each excluding all strings drawn before it; so splits sharing the
    training window (``bin0``) hold held-out strings. With ``n_dev > 0`` a ``dev`` split (the
    model-selection set) of ``n_dev`` strings is drawn last from the training window, excluding train
    and every test bin: no test string is ever a dev string (and train and the test bins are the same
    strings as without it). ``None`` sizes take ``language.default_sizes`` (10,000 / 2,000, reduced
    where the windows hold fewer strings). A window with too few strings raises ValueError, unless
    ``allow_fewer``: then the splits sharing a window share what it holds -- where the training window
    is one of them, each other split (dev included) gets at most a fifth of the window divided among
    them (at least one string) and train the rest; otherwise in proportion to their requests -- and
    every split takes at most what is left.
    """
    bins = dict(bins if bins is not None else language.default_bins)
    if not bins:
        raise ValueError(f"{language.name!r} has no default bins: pass bins={{'train': (lo, hi), ...}}")
    n_dev = int(n_dev)
    if n_dev and "dev" in bins:
        raise ValueError("n_dev draws the 'dev' split from the training window: do not also pass a 'dev' bin")
    if n_dev < 0:
        raise ValueError(f"n_dev must be >= 0, got {n_dev}")
    if n_dev and "train" not in bins:
        raise ValueError("a dev split needs a 'train' window to draw from")
    order = (["train"] if "train" in bins else []) + [k for k in bins if k != "train"]
    defaults = language.default_sizes if (n_train is None or n_test is None) else {}
    sizes = {}
    for k in order:
        if k == "train":
            sizes[k] = int(n_train if n_train is not None else defaults.get(k, 10_000))
        else:
            sizes[k] = int(n_test if n_test is not None else defaults.get(k, 2_000))
    windows = {k: (int(bins[k][0]), int(bins[k][1])) for k in order}
    if n_dev:
        order.append("dev")
        sizes["dev"] = n_dev
        windows["dev"] = windows["train"]
    if allow_fewer:
        groups: dict[tuple, list[str]] = {}
        for k in order:
            groups.setdefault(windows[k], []).append(k)
        for w, ks in groups.items():
            N = language.count_window(*w)
            want = sum(sizes[k] for k in ks)
            if N is None or want <= N:
                continue
            if "train" in ks and len(ks) > 1:
                others = [k for k in ks if k != "train"]
                each = max(1, N // (5 * len(others)))
                share = {k: min(sizes[k], each) for k in others}
                share["train"] = min(sizes["train"], N - sum(share.values()))
            else:
                share = {k: (sizes[k] * N) // want for k in ks}
            for k in ks:  # give every split that asked for strings at least one, if possible
                if sizes[k] and not share[k] and sum(share.values()) < N:
                    share[k] = 1
            left = N - sum(share.values())
            for k in ks:
                take = min(left, sizes[k] - share[k])
                share[k] += take
                left -= take
            sizes.update(share)
    taken: set[str] = set()
    out: dict[str, list[str]] = {}
    for k in order:
        lo, hi = windows[k]
        n = sizes[k]
        if allow_fewer:
            N = language.count_window(lo, hi)
            if N is not None:
                n = max(0, min(n, N - sum(1 for x in taken if lo <= len(x) <= hi)))
        try:
            out[k] = language.sample(n, lo, hi, seed=_split_seed(seed, k), exclude=taken, _exclude_are_members=True)
        except ValueError as e:
            raise ValueError(f"split {k!r}: {e} (make_splits(..., allow_fewer=True) takes what there is; "
                             f"language.default_sizes = {language.default_sizes})") from None
        taken.update(out[k])
    return out
