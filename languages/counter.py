"""Counter (non-regular) languages of the suite: Dyck-1, Shuffle-k, a^n b^n (c^n (d^n)), Boolean-k.

All follow Bhattamishra, Ahuja & Goyal (EMNLP 2020) as used by the paper's repository.

* ``dyck1`` [``(``, ``)``]: balanced brackets (the empty string included). Trace: ``counter`` =
  ``(depth,)``, ``depth`` = #( - #) of the prefix, ``phase`` (0 while the prefix is a valid prefix,
  -1 once the depth has gone negative).
* ``shuffle2``, ``shuffle4``, ``shuffle6``: interleavings of k Dyck-1 languages with distinct bracket
  pairs, taken in Bhattamishra et al.'s order ``() [] {} <> +- ab`` (the alphabet lists each open
  bracket before its close). A string is a member iff, for every pair separately, no prefix has more
  closes than opens and the counts are equal at the end. Trace: ``counter`` = one (#open - #close)
  per pair, ``phase`` (0 valid / -1 dead).
* ``anbn`` [a,b], ``anbncn`` [a,b,c], ``anbncndn`` [a,b,c,d]: ``a^n b^n (c^n (d^n))`` with n >= 1.
  Trace: ``counter`` = ``(#a-#b,)``, ``(#a-#b, #b-#c)``, ``(#a-#b, #b-#c, #c-#d)`` (each counter
  climbs in its first letter's block and returns to 0 in the next block; the construction of SPEC §1
  uses 1/2/3 counters); ``phase`` = index of the block being read (0 before any symbol, 1 while
  reading a's, 2 for b's, ...; -1 once the prefix is no longer a prefix of a member). ``phase >= 2``
  is SPEC §1's "seen b" flag. Default windows: SPEC §3 / the paper's repository give n in [2, 100],
  [3, 150], [4, 200] for training (i.e. ``n`` in ``[k, 50k]`` for k letters) and shift later bins by
  the same width (bin1 ``[50k+1, 100k]``, bin2 ``[100k+1, 150k]``); ``default_bins`` holds the
  corresponding *lengths* ``k·n``: anbn (4, 200) / (202, 400) / (402, 600), anbncn (9, 450) /
  (453, 900) / (903, 1350), anbncndn (16, 800) / (804, 1600) / (1604, 2400). Each length holds one
  string, so ``default_sizes`` is small (e.g. anbn: 80 train, 19 bin0, 100 bin1 and bin2).
* ``boolean3`` [0,1,~,+,>], ``boolean5`` [0,1,~,+,>,*,^]: Boolean expressions in Polish (prefix)
  notation over the constants 0 and 1 with k operators of *different arities* 1..k. Judgment call,
  following the generator in the paper's repository (Bhattamishra et al.'s own generator stops at 3):
  ``~`` is unary, ``+`` binary, ``>`` ternary, ``*`` 4-ary and ``^`` 5-ary; Boolean-3 uses the first
  three, Boolean-5 all five. A string is a member iff it is one complete expression: the number of
  pending operands (1 at the start, +arity-1 per operator, -1 per constant) stays positive before the
  last symbol and is 0 after it. The truth value plays no role (the task is predicting the allowed
  next symbols: any symbol while operands are pending, END once complete). Trace: ``counter`` =
  ``(pending operands,)``, ``phase`` = 0 while incomplete, 1 once complete, -1 after a symbol past
  completion. Sampling: symbol by symbol as in the generator (a constant with probability 1-p, each
  operator p/k; p = 0.5 for boolean3, 0.3 for boolean5 as in the paper's configs), restricted at each
  step to the symbols that keep the exact target length reachable.

Sampling of Dyck-1 and Shuffle-k (target length L fixed): while brackets are open and there is room
to close them all, open with probability 1/2 (a uniformly random pair for Shuffle-k) or close (for
Shuffle-k a uniformly random pair among those with an open bracket); forced opens at depth 0 and forced
closes when the remaining length equals the number of open brackets. Default windows for dyck1,
shuffle and boolean: train/bin0 [2, 50], bin1 [51, 100], bin2 [101, 150] (SPEC §3).
"""
from __future__ import annotations

import math
import random
from typing import Optional

import numpy as np

from .base import Language

__all__ = ["Dyck1", "Shuffle", "BlockCounter", "BooleanExpr", "COUNTER_FACTORIES", "SHUFFLE_PAIRS"]

SHUFFLE_PAIRS = [("(", ")"), ("[", "]"), ("{", "}"), ("<", ">"), ("+", "-"), ("a", "b"), ("x", "o")]
BOOLEAN_OPERATORS = "~+>*^"  # arities 1, 2, 3, 4, 5
COUNTER_BINS = {"train": (2, 50), "bin0": (2, 50), "bin1": (51, 100), "bin2": (101, 150)}
_UNKNOWN_COUNT_ABOVE = 200  # exact Shuffle/Boolean counts are computed up to this length


def _bits_to_matrix(codes: list[int], width: int) -> np.ndarray:
    arr = np.asarray(codes, dtype=np.int64)
    return ((arr[:, None] >> np.arange(width, dtype=np.int64)) & 1).astype(bool)


def _catalan(m: int) -> int:
    return math.comb(2 * m, m) // (m + 1)


class _CounterBase(Language):
    _kind = "counter"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._tuples: dict = {}

    def _interned(self, rows: list) -> list[tuple]:
        """Per-position tuples, shared between positions and strings (memory for big batches)."""
        cache = self._tuples
        if len(cache) > 500_000:
            cache.clear()
        out = []
        for r in rows:
            key = tuple(r)
            t = cache.get(key)
            if t is None:
                cache[key] = t = key
            out.append(t)
        return out


class Dyck1(_CounterBase):
    """Dyck-1 over ``(`` and ``)`` (balanced brackets; the empty string is a member)."""

    state_variables = ("counter", "depth", "phase")

    def __init__(self, p_open: float = 0.5):
        super().__init__("()", name="dyck1", description="Dyck-1: balanced ( )", default_bins=COUNTER_BINS)
        self.p_open = float(p_open)

    def _analyze(self, ids, s, want_trace):
        depth = np.concatenate([[0], np.cumsum(1 - 2 * ids)])
        valid = np.minimum.accumulate(depth) >= 0
        allowed = np.empty((len(depth), 3), dtype=bool)
        allowed[:, 0] = valid
        allowed[:, 1] = valid & (depth > 0)
        allowed[:, 2] = valid & (depth == 0)
        tr = None
        if want_trace:
            d = depth.tolist()
            tr = {
                "counter": self._interned([(x,) for x in d]),
                "depth": d,
                "phase": np.where(valid, 0, -1).tolist(),
            }
        return allowed, allowed[:, 2].copy(), tr

    def count(self, length: int) -> int:
        return _catalan(length // 2) if length >= 0 and length % 2 == 0 else 0

    def _sample_length(self, rng: random.Random, length: int) -> Optional[str]:
        if length % 2:
            return None
        rand, p = rng.random, self.p_open
        out = []
        d = 0
        for r in range(length, 0, -1):
            if d == 0 or (d < r and rand() < p):
                out.append("(")
                d += 1
            else:
                out.append(")")
                d -= 1
        return "".join(out)


class Shuffle(_CounterBase):
    """Shuffle-k: interleavings of k Dyck-1 languages with distinct bracket pairs."""

    state_variables = ("counter", "phase")

    def __init__(self, k: int, p_open: float = 0.5):
        if not 1 <= k <= len(SHUFFLE_PAIRS):
            raise ValueError(f"Shuffle-k needs 1 <= k <= {len(SHUFFLE_PAIRS)}, got {k}")
        self.k = int(k)
        self.pairs = SHUFFLE_PAIRS[:k]
        super().__init__([c for pair in self.pairs for c in pair], name=f"shuffle{k}",
                         description=f"Shuffle-{k}: interleaving of {k} Dyck-1 languages "
                                     f"({' '.join(o + c for o, c in self.pairs)})",
                         default_bins=COUNTER_BINS)
        self.p_open = float(p_open)
        self._count_cache: Optional[list[int]] = None

    def _analyze(self, ids, s, want_trace):
        k, n = self.k, len(ids)
        steps = np.zeros((n + 1, k), dtype=np.int64)
        steps[np.arange(1, n + 1), ids // 2] = 1 - 2 * (ids % 2)
        counters = np.cumsum(steps, axis=0)
        valid = np.minimum.accumulate(counters.min(axis=1)) >= 0
        allowed = np.zeros((n + 1, 2 * k + 1), dtype=bool)
        allowed[:, 0 : 2 * k : 2] = valid[:, None]
        allowed[:, 1 : 2 * k : 2] = valid[:, None] & (counters > 0)
        allowed[:, 2 * k] = valid & (counters == 0).all(axis=1)
        tr = None
        if want_trace:
            tr = {"counter": self._interned(counters.tolist()), "phase": np.where(valid, 0, -1).tolist()}
        return allowed, allowed[:, 2 * k].copy(), tr

    def count(self, length: int) -> Optional[int]:
        if length < 0 or length % 2:
            return 0
        if length > _UNKNOWN_COUNT_ABOVE:
            return None
        if self._count_cache is None:
            M = _UNKNOWN_COUNT_ABOVE
            dyck = [_catalan(L // 2) if L % 2 == 0 else 0 for L in range(M + 1)]
            cur = list(dyck)
            for _ in range(self.k - 1):  # exponential-generating-function product: interleavings
                cur = [sum(math.comb(L, a) * dyck[a] * cur[L - a] for a in range(0, L + 1, 2)) for L in range(M + 1)]
            self._count_cache = cur
        return self._count_cache[length]

    def _length_possible(self, length: int) -> bool:
        return length % 2 == 0

    def _sample_length(self, rng: random.Random, length: int) -> Optional[str]:
        if length % 2:
            return None
        rand, p, k = rng.random, self.p_open, self.k
        c = [0] * k
        total = 0
        out = []
        for r in range(length, 0, -1):
            if total == 0 or (total < r and rand() < p):
                t = int(rand() * k)
                c[t] += 1
                total += 1
                out.append(self.pairs[t][0])
            else:
                nz = [i for i in range(k) if c[i]]
                t = nz[int(rand() * len(nz))]
                c[t] -= 1
                total -= 1
                out.append(self.pairs[t][1])
        return "".join(out)


class BlockCounter(_CounterBase):
    """``a^n b^n``, ``a^n b^n c^n``, ``a^n b^n c^n d^n`` (k = 2, 3, 4 letters; n >= 1)."""

    state_variables = ("counter", "phase")

    def __init__(self, k: int):
        if not 2 <= k <= 4:
            raise ValueError(f"k must be 2, 3 or 4, got {k}")
        self.k = int(k)
        letters = "abcd"[:k]
        name = "".join(f"{c}n" for c in letters)
        w = 50 * k
        bins = {
            "train": (k * k, k * w),
            "bin0": (k * k, k * w),
            "bin1": (k * (w + 1), k * 2 * w),
            "bin2": (k * (2 * w + 1), k * 3 * w),
        }
        super().__init__(letters, name=name, description=" ".join(f"{c}^n" for c in letters) + " (n >= 1)",
                         default_bins=bins)

    def _analyze(self, ids, s, want_trace):
        k = self.k
        n = len(ids)
        END_BIT = 1 << k
        codes = [1]  # empty prefix: only a
        member = [False]
        raw = [0] * k
        counters = [tuple([0] * (k - 1))] if want_trace else None
        phases = [0] if want_trace else None
        phase, m, cur = 0, 0, 0  # block index; n so far (a's); count in the current block
        for x in ids.tolist():
            raw[x] += 1
            if phase >= 0:
                if phase == 0:
                    phase, m, cur = (1, 1, 1) if x == 0 else (-1, m, cur)
                elif phase == 1 and x == 0:
                    m += 1
                    cur = m
                elif x == phase - 1 and phase >= 2 and cur < m:
                    cur += 1
                elif x == phase and (phase == 1 or cur == m) and phase < k:
                    phase, cur = phase + 1, 1
                else:
                    phase = -1
            if phase < 0:
                codes.append(0)
                member.append(False)
            elif phase == 1:
                codes.append(0b11)
                member.append(False)
            elif cur < m:
                codes.append(1 << (phase - 1))
                member.append(False)
            elif phase < k:
                codes.append(1 << phase)
                member.append(False)
            else:
                codes.append(END_BIT)
                member.append(True)
            if want_trace:
                counters.append(tuple(raw[j] - raw[j + 1] for j in range(k - 1)))
                phases.append(phase)
        allowed = _bits_to_matrix(codes, k + 1)
        tr = {"counter": self._interned(counters), "phase": phases} if want_trace else None
        return allowed, np.array(member, dtype=bool), tr

    def count(self, length: int) -> int:
        return 1 if length >= self.k and length % self.k == 0 else 0

    def _sample_length(self, rng, length):
        if not self.count(length):
            return None
        return "".join(c * (length // self.k) for c in self.alphabet)


class BooleanExpr(_CounterBase):
    """Boolean-k: one complete Polish-notation expression over 0/1 with operators of arities 1..k."""

    state_variables = ("counter", "phase")

    def __init__(self, k: int, p: Optional[float] = None):
        if not 1 <= k <= len(BOOLEAN_OPERATORS):
            raise ValueError(f"Boolean-k needs 1 <= k <= {len(BOOLEAN_OPERATORS)}, got {k}")
        self.k = int(k)
        self.p = float(p if p is not None else (0.5 if k <= 3 else 0.3))
        if not 0 < self.p < 1:
            raise ValueError(f"p must be in (0, 1), got {self.p}")
        ops = BOOLEAN_OPERATORS[:k]
        self.arity = {"0": 0, "1": 0, **{op: i + 1 for i, op in enumerate(ops)}}
        super().__init__("01" + ops, name=f"boolean{k}", params={"p": self.p},
                         description=f"Boolean-{k}: Polish-notation expressions over 0/1 with operators "
                                     + ", ".join(f"{op} (arity {i + 1})" for i, op in enumerate(ops)),
                         default_bins=COUNTER_BINS)
        self._delta = np.array([self.arity[c] - 1 for c in self.alphabet], dtype=np.int64)
        self._count_cache: Optional[list[int]] = None

    def _analyze(self, ids, s, want_trace):
        S = len(self.alphabet)
        pending = np.concatenate([[1], 1 + np.cumsum(self._delta[ids])])
        cm = np.minimum.accumulate(pending)
        valid = np.concatenate([[True], cm[:-1] > 0])
        allowed = np.zeros((len(pending), S + 1), dtype=bool)
        allowed[:, :S] = (valid & (pending > 0))[:, None]
        allowed[:, S] = valid & (pending == 0)
        tr = None
        if want_trace:
            tr = {
                "counter": self._interned([(x,) for x in pending.tolist()]),
                "phase": np.where(valid, np.where(pending == 0, 1, 0), -1).tolist(),
            }
        return allowed, allowed[:, S].copy(), tr

    def count(self, length: int) -> Optional[int]:
        if length <= 0:
            return 0
        if length > _UNKNOWN_COUNT_ABOVE:
            return None
        if self._count_cache is None:
            M = _UNKNOWN_COUNT_ABOVE
            counts = [0] * (M + 1)
            g = [0] * (M + 2)  # g[c]: strings of the current length, pending c >= 1 throughout
            g[1] = 1
            for t in range(M):
                counts[t + 1] = 2 * g[1]  # a constant completes the expression
                lim = M - (t + 1)  # pending above this can no longer reach 0 within M
                ng = [0] * (M + 2)
                for c in range(1, min(len(g) - 1, lim + 2)):
                    w = g[c]
                    if not w:
                        continue
                    if 2 <= c <= lim + 1:
                        ng[c - 1] += 2 * w
                    for a in range(1, self.k + 1):
                        if c + a - 1 <= lim:
                            ng[c + a - 1] += w
                g = ng
            self._count_cache = counts
        return self._count_cache[length]

    def _sample_length(self, rng: random.Random, length: int) -> Optional[str]:
        if length < 1:
            return None
        rand, p, k = rng.random, self.p, self.k
        ops = BOOLEAN_OPERATORS[:k]
        out = []
        c = 1
        for r in range(length, 0, -1):
            # candidates keep the target reachable: c' = 0 at the end, 1 <= c' <= r - 1 before
            cands, weights = [], []
            if (r == 1 and c == 1) or (r > 1 and c >= 2):
                cands.append(None)
                weights.append(1 - p)
            if r > 1:
                for a in range(1, k + 1):
                    if c + a - 1 <= r - 1:
                        cands.append(a)
                        weights.append(p / k)
            x = rand() * sum(weights)
            choice = cands[-1]
            for cand, w in zip(cands, weights):
                if x < w:
                    choice = cand
                    break
                x -= w
            if choice is None:
                out.append("0" if rand() < 0.5 else "1")
                c -= 1
            else:
                out.append(ops[choice - 1])
                c += choice - 1
        return "".join(out)


COUNTER_FACTORIES = {
    "dyck1": lambda: Dyck1(),
    "shuffle2": lambda: Shuffle(2),
    "shuffle4": lambda: Shuffle(4),
    "shuffle6": lambda: Shuffle(6),
    "boolean3": lambda p=0.5: BooleanExpr(3, p),
    "boolean5": lambda p=0.3: BooleanExpr(5, p),
    "anbn": lambda: BlockCounter(2),
    "anbncn": lambda: BlockCounter(3),
    "anbncndn": lambda: BlockCounter(4),
}
