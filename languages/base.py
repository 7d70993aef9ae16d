"""The :class:`Language` base class: validation, the public per-string methods, and seeded sampling.

Glossary (used in every module of this package)

* ``s``: a string over ``alphabet`` (one character per symbol). ``n = len(s)``.
* ``ids``: ``s`` as an int64 array of symbol indices into ``alphabet`` (``Language.symbol_ids``).
* prefix ``i``: ``s[:i]`` for ``i = 0..n``. Model position ``i`` (after BOS) has read ``s[:i]``.
* allowed matrix: bool ``[n + 1, len(alphabet) + 1]``; row ``i`` marks the symbols that may follow
  ``s[:i]`` (column ``j`` = ``alphabet[j]``) and, in the last column, :data:`END`.
* trace: ``dict[str, list]`` of automaton variables; with ``initial=True`` entry ``i`` describes the
  automaton after reading ``s[:i]`` (entry 0 = start state), else entry ``t`` = after ``s[t]``.

A subclass implements one method, ``_analyze(ids, s, want_trace)``, returning the allowed matrix, the
prefix-membership vector (length ``n + 1``) and, when asked, the trace with ``n + 1`` entries; plus
``count(L)`` (exact number of members of length ``L``, or None when not cheap) and
``_sample_length(rng, L)`` (one member of length exactly ``L``, drawn by its generative process).

Sampling (:meth:`Language.sample`) draws ``n`` *distinct* members with lengths in a window: the
lengths with members are given equal quotas (water-filling: a length with fewer members than its
share gives the rest to the others), each length is filled by its generative process (rejecting
repeats and excluded strings), and a length whose generator stops producing new strings within its
budget is treated as exhausted and its deficit is handed to the others. The result is shuffled. Only
one ``random.Random(seed)`` is used, so the output is reproducible byte for byte for a seed.
"""
from __future__ import annotations

import math
import numbers
import os
import random
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from .vocab import END, SymbolIndex, Vocab, check_alphabet

DEFAULT_N_TRAIN = 10_000
DEFAULT_N_TEST = 2_000

__all__ = ["END", "Language", "DEFAULT_N_TRAIN", "DEFAULT_N_TEST", "check_int"]


def check_int(name: str, value: Any, minimum: Optional[int] = None) -> int:
    """``value`` as an int, or ValueError naming ``name``: booleans and non-integers (8.5, but also
    8.0) are refused rather than truncated, as is a value below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_fits(n: int, min_len: int, max_len: int, what: str = "n") -> None:
    """Fail fast, with the estimate, when ``n`` strings of lengths ``min_len..max_len`` cannot be held
    in this machine's memory (about 80 bytes of overhead per string plus its characters, twice: the
    result and the set of strings drawn so far)."""
    need = 2 * n * (80 + (min_len + max_len) / 2)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover (no sysconf)
        return
    if need > have / 2:
        raise ValueError(f"{what}={n} strings of length {min_len}-{max_len} need about {need / 2**30:.1f} GiB of "
                         f"memory; this machine has {have / 2**30:.1f} GiB: ask for fewer")


def water_fill(n: int, caps: Sequence[Optional[int]], rng: random.Random) -> list[int]:
    """Split ``n`` into ``len(caps)`` near-equal parts, part ``i`` at most ``caps[i]`` (None = no cap).

    What a capped part cannot take goes to the others; a final remainder smaller than the number of
    open parts goes to a random subset (drawn from ``rng``). Raises ValueError if the caps are too small.
    """
    alloc = [0] * len(caps)
    remaining = n
    open_ = [i for i, c in enumerate(caps) if c is None or c > 0]
    while remaining > 0 and open_:
        share = remaining // len(open_)
        if share == 0:
            for i in sorted(rng.sample(open_, remaining)):
                alloc[i] += 1
            remaining = 0
            break
        still = []
        for i in open_:
            room = remaining if caps[i] is None else min(remaining, caps[i] - alloc[i])
            give = min(share, room)
            alloc[i] += give
            remaining -= give
            if caps[i] is None or alloc[i] < caps[i]:
                still.append(i)
        open_ = still
    if remaining > 0:
        raise ValueError(f"cannot split {n} into parts with caps {list(caps)}")
    return alloc


class Language:
    """A formal language with per-step automaton states (see the module docstring for the glossary).

    Attributes:
        name: registry name (``languages.get(name, **params)`` rebuilds it).
        params: the keyword parameters ``get`` accepts for it (e.g. ``{"K": 8, "h": 10}``).
        alphabet: tuple of one-character symbols (never containing :data:`END`).
        kind: ``"star-free"``, ``"non-star-free"`` or ``"counter"``.
        membership_target: True where the per-position target is prefix membership.
        description: one line defining the language.
        state_variables: the keys of :meth:`trace`.
        default_bins: split name -> ``(min_len, max_len)`` (the paper's windows; ``{}`` if none).
    """

    name: str = "language"
    state_variables: tuple[str, ...] = ()
    _kind: Optional[str] = None

    def __init__(
        self,
        alphabet: Iterable[str],
        *,
        name: str,
        params: Optional[dict] = None,
        membership_target: bool = False,
        description: str = "",
        default_bins: Optional[dict] = None,
    ):
        self.alphabet = check_alphabet(alphabet)
        self.name = name
        self.params = dict(params or {})
        self.membership_target = bool(membership_target)
        self.description = description
        self.default_bins = {k: (int(v[0]), int(v[1])) for k, v in (default_bins or {}).items()}
        self._symbols = SymbolIndex(self.alphabet, self._bad_symbol)
        self._index = self._symbols.index
        self._mask_cache: dict[int, frozenset] = {}
        self._default_sizes: Optional[dict] = None

    # ------------------------------------------------------------------ identity
    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"<Language {self.name}{'(' + p + ')' if p else ''} over {''.join(self.alphabet)!r}: {self.kind}>"

    @property
    def kind(self) -> str:
        """``"star-free"`` / ``"non-star-free"`` for regular languages, else ``"counter"``."""
        if self._kind is not None:
            return self._kind
        sf = self.is_star_free()
        return "counter" if sf is None else ("star-free" if sf else "non-star-free")

    def is_star_free(self) -> Optional[bool]:
        """True/False for regular languages (aperiodic syntactic monoid or not); None if not regular."""
        return None

    @property
    def vocab(self) -> Vocab:
        """``languages.vocab.Vocab(self.alphabet)``."""
        return Vocab(self.alphabet)

    # ------------------------------------------------------------------ validation
    def _bad_symbol(self, s: str, pos: int) -> ValueError:
        c = s[pos]
        hint = " (the END marker is not a symbol)" if c == END else ""
        return ValueError(
            f"symbol {c!r} at position {pos} is not in the alphabet of {self.name!r} "
            f"({''.join(self.alphabet)!r}){hint}"
        )

    def symbol_ids(self, s: str) -> np.ndarray:
        """``s`` as int64 indices into ``alphabet``; ValueError naming the first foreign symbol and position."""
        return self._symbols(s)

    # ------------------------------------------------------------------ the one hook
    def _analyze(self, ids: np.ndarray, s: str, want_trace: bool):
        """-> (allowed [n+1, |Σ|+1] bool, membership [n+1] bool, trace dict with n+1 entries or None)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ public per-string API
    def accepts(self, s: str) -> bool:
        """Whether ``s`` is in the language."""
        return bool(self._analyze(self.symbol_ids(s), s, False)[1][-1])

    def prefix_labels(self, s: str) -> list[bool]:
        """``len(s) + 1`` bools: entry ``i`` says whether ``s[:i]`` is in the language."""
        return self._analyze(self.symbol_ids(s), s, False)[1].tolist()

    def allowed_matrix(self, s: str) -> np.ndarray:
        """Bool ``[len(s) + 1, len(alphabet) + 1]``: row ``i`` = :meth:`allowed_next` ``(s)[i]`` as a
        multi-hot over ``alphabet`` with :data:`END` in the last column."""
        return self._analyze(self.symbol_ids(s), s, False)[0]

    def allowed_next(self, s: str) -> list[frozenset]:
        """``len(s) + 1`` frozensets: entry ``i`` holds the symbols ``σ`` such that some member string
        starts with ``s[:i] + σ``, plus :data:`END` iff ``s[:i]`` is itself a member. Empty once
        ``s[:i]`` is not a prefix of any member."""
        return self._rows_to_sets(self.allowed_matrix(s))

    def _rows_to_sets(self, mat: np.ndarray) -> list[frozenset]:
        width = mat.shape[1]
        if width <= 62:
            codes = (mat.astype(np.int64) << np.arange(width, dtype=np.int64)).sum(axis=1).tolist()
        else:
            codes = [int("".join("1" if b else "0" for b in row[::-1]), 2) for row in mat]
        cache = self._mask_cache
        symbols = self.alphabet + (END,)
        out = []
        for code in codes:
            fs = cache.get(code)
            if fs is None:
                fs = frozenset(symbols[j] for j in range(width) if code >> j & 1)
                cache[code] = fs
            out.append(fs)
        return out

    def trace(self, s: str, initial: bool = False) -> dict[str, list]:
        """Per-position automaton variables (keys: :attr:`state_variables`).

        ``initial=False``: lists of length ``len(s)``, entry ``t`` = after reading ``s[t]``.
        ``initial=True``: length ``len(s) + 1``, entry 0 = the start state (aligned with model positions).
        """
        tr = self._analyze(self.symbol_ids(s), s, True)[2]
        if initial:
            return tr
        return {k: v[1:] for k, v in tr.items()}

    # ------------------------------------------------------------------ counting
    def count(self, length: int) -> Optional[int]:
        """Exact number of member strings of exactly ``length`` symbols, or None when not cheap."""
        return None

    def count_window(self, min_len: int, max_len: int) -> Optional[int]:
        """Exact number of members with ``min_len <= len <= max_len`` (None if some count is unknown)."""
        total = 0
        for L in range(max(0, min_len), max_len + 1):
            c = self.count(L)
            if c is None:
                return None
            total += c
        return total

    def _length_possible(self, length: int) -> bool:
        """For lengths whose count is unknown: can a member have this length?"""
        return True

    # ------------------------------------------------------------------ sampling
    def _sample_length(self, rng: random.Random, length: int) -> Optional[str]:
        """One member of exactly ``length`` symbols from the language's generative process."""
        raise NotImplementedError

    def _draw(self, length: int, need: int, rng: random.Random, exclude, seen: set, cap: Optional[int]) -> list[str]:
        """Up to ``need`` new distinct members of length ``length`` (fewer if the budget runs out)."""
        out: list[str] = []
        budget = 20 * need + 200
        if cap is not None and cap < 100_000:
            budget += int(4 * cap * math.log(cap + 2))
        tries = 0
        while len(out) < need and tries < budget:
            tries += 1
            s = self._sample_length(rng, length)
            if s is None:
                break
            if s in seen or s in exclude:
                continue
            seen.add(s)
            out.append(s)
        return out

    def sample(
        self,
        n: int,
        min_len: int,
        max_len: int,
        seed: Any = 0,
        *,
        exclude: Optional[Iterable[str]] = None,
        _exclude_are_members: bool = False,
    ) -> list[str]:
        """``n`` distinct member strings with ``min_len <= len(s) <= max_len``, reproducible for ``seed``.

        Lengths are spread evenly over the window's lengths that have members (see the module
        docstring); strings in ``exclude`` are never returned. Raises ValueError when the window holds
        no member strings or fewer than ``n`` (after exclusion); the count is exact wherever
        :meth:`count` is.
        """
        n, min_len, max_len = check_int("n", n, 0), check_int("min_len", min_len), check_int("max_len", max_len)
        if min_len < 0 or max_len < min_len:
            raise ValueError(f"need 0 <= min_len <= max_len, got [{min_len}, {max_len}]")
        if n == 0:
            return []
        check_fits(n, min_len, max_len)
        rng = random.Random(seed)
        excl = exclude if isinstance(exclude, (set, frozenset)) else set(exclude or ())
        excl_by_len: dict[int, int] = {}
        for x in excl:
            if min_len <= len(x) <= max_len:
                if not _exclude_are_members:
                    try:
                        if not self.accepts(x):
                            continue
                    except ValueError:
                        continue
                excl_by_len[len(x)] = excl_by_len.get(len(x), 0) + 1
        lengths: list[int] = []
        caps: list[Optional[int]] = []
        for L in range(min_len, max_len + 1):
            c = self.count(L)
            if c is None:
                if not self._length_possible(L):
                    continue
                cap = None
            else:
                cap = c - excl_by_len.get(L, 0)
                if cap <= 0:
                    continue
            lengths.append(L)
            caps.append(cap)
        what = f"{self.name!r}: the length window [{min_len}, {max_len}]"
        if not lengths:
            extra = " besides the excluded ones" if excl_by_len else ""
            raise ValueError(f"{what} holds no member strings{extra}")
        if all(c is not None for c in caps) and sum(caps) < n:
            extra = f" ({sum(excl_by_len.values())} more are excluded)" if excl_by_len else ""
            raise ValueError(f"{what} holds only {sum(caps)} member strings{extra}; cannot draw {n} distinct ones")
        quotas = water_fill(n, caps, rng)
        got: list[list[str]] = [[] for _ in lengths]
        seen: set = set()
        while True:
            for i, L in enumerate(lengths):
                need = quotas[i] - len(got[i])
                if need <= 0:
                    continue
                new = self._draw(L, need, rng, excl, seen, caps[i])
                got[i].extend(new)
                if len(new) < need:  # exhausted (or the generator cannot find more): cap it here
                    caps[i] = len(got[i])
            total = sum(len(g) for g in got)
            if total >= n:
                break
            room = [None if c is None else c - len(g) for c, g in zip(caps, got)]
            if all(r is not None for r in room) and sum(max(r, 0) for r in room) < n - total:
                raise ValueError(
                    f"{what}: found only {total} distinct member strings (of {n} asked); the window is "
                    f"(nearly) exhausted for this language's generator"
                )
            extra = water_fill(n - total, room, rng)
            quotas = [len(g) + e for g, e in zip(got, extra)]
        out = [s for g in got for s in g]
        rng.shuffle(out)
        return out

    # ------------------------------------------------------------------ defaults for datasets
    @property
    def default_sizes(self) -> dict[str, int]:
        """Split name -> number of strings for :func:`languages.datasets.make_splits` with its defaults.

        10,000 train / 2,000 per test split (the paper's sizes), reduced where :attr:`default_bins` windows hold
        fewer strings: splits sharing the training window keep 20% of it for testing; a window that
        overlaps an earlier one counts only its lengths outside it (the splits are disjoint).
        """
        if self._default_sizes is None:
            sizes: dict[str, int] = {}
            groups: dict[tuple, list[str]] = {}
            for k, w in self.default_bins.items():
                groups.setdefault(tuple(w), []).append(k)
            covered: set[int] = set()
            for w, ks in groups.items():
                counts = [self.count(L) for L in range(max(0, w[0]), w[1] + 1) if L not in covered]
                N = math.inf if None in counts else sum(counts)
                covered.update(range(w[0], w[1] + 1))
                others = [k for k in ks if k != "train"]
                if "train" in ks:
                    each = int(min(DEFAULT_N_TEST, max(1, N // (5 * max(1, len(others))))))
                    for k in others:
                        sizes[k] = each
                    sizes["train"] = int(max(0, min(DEFAULT_N_TRAIN, N - each * len(others))))
                else:
                    each = int(min(DEFAULT_N_TEST, N // len(ks)))
                    for k in ks:
                        sizes[k] = each
            self._default_sizes = {k: sizes[k] for k in self.default_bins}
        return dict(self._default_sizes)

    # ------------------------------------------------------------------ helpers for subclasses
    @staticmethod
    def _empty_matrix(n: int, width: int) -> np.ndarray:
        return np.zeros((n + 1, width), dtype=bool)
