"""Dyck(K, h): K bracket types, nesting depth never above h (Yao et al. 2021). Hand-written, O(len).

Symbols: one character per bracket. The pairs are ``() [] {} <>`` followed by ``aA bB cC ...`` (open =
lower case, close = upper case), so Dyck(8, 10) uses ``()[]{}<>aAbBcCdD``; ``pairs`` lists them and
the alphabet interleaves them (open_0, close_0, open_1, ...). At most 30 types.

Membership: every close matches the most recent unclosed open, the depth never exceeds ``h``, and the
string ends balanced (the empty string is a member). Allowed next after a valid prefix: every open
bracket iff depth < h, the close matching the top of the stack iff depth > 0, END iff depth = 0.

Trace (``initial=True`` gives ``len(s) + 1`` entries): ``depth``, ``top`` (open symbol on top of the
stack, None when empty) and ``stack`` (tuple of open symbols, bottom first). On a string that leaves
the language the stack keeps being updated naively (a close pops whatever is on top, a close on an
empty stack does nothing, an open past ``h`` is pushed); ``allowed_next`` is empty from there on.

Star-freeness: Dyck(K, h) is regular (states = stacks of depth <= h) and star-free. Justification: a
word w acts on stacks by popping a fixed sequence of opens and pushing a fixed sequence (or killing
the run). If it pushes more than it pops, or pops more than it pushes, iterating it leaves the depth
window [0, h] after at most h + 1 rounds, so w^(h+1) = w^(h+2) = the dead map; if it pops and pushes
the same number, w^2 acts like w or like the dead map, so w^2 = w^3. Hence the transition monoid is
aperiodic (Schützenberger). :meth:`Dyck.is_star_free` returns True; :meth:`Dyck.to_dfa` builds the
explicit DFA for small K and h so that this can be checked by the monoid test (tests do it for
Dyck(2, 2) and Dyck(2, 3); Dyck(8, 10) has sum 8^d, d <= 10, about 1.2e9 states).

Sampling (target length L, even): at depth 0 open; when the remaining length equals the depth, or the
depth is h, close; otherwise open with probability ``p_open`` (default 1/2). Opens pick a uniformly
random type; closes match the top. ``default_bins``: train and bin0 (2, 698), bin1 (700, 1398): Yao et
al.'s Dyck(8, 10) setting (lengths up to 700 and 701-1400 counting their END token, as the paper's
stored files show: dev strings of 2-686 brackets, test strings of 702-1268); only even lengths have
members.
"""
from __future__ import annotations

import random
from collections import deque
from typing import Optional

import numpy as np

from .base import Language, check_int
from .dfa import DFA
from .paper import PAPER_WINDOWS

__all__ = ["Dyck", "dyck_pairs"]

_BRACKETS = [("(", ")"), ("[", "]"), ("{", "}"), ("<", ">")]
_LETTERS = [(chr(ord("a") + i), chr(ord("A") + i)) for i in range(26)]


def dyck_pairs(K: int) -> list[tuple[str, str]]:
    """The (open, close) symbol pairs of Dyck(K, h)."""
    pairs = _BRACKETS + _LETTERS
    if not 1 <= K <= len(pairs):
        raise ValueError(f"K must be in [1, {len(pairs)}], got {K}")
    return pairs[:K]


class Dyck(Language):
    """Dyck(K, h): K bracket types, depth at most h (see the module docstring)."""

    state_variables = ("depth", "top", "stack")
    _kind = "star-free"

    def __init__(self, K: int = 8, h: int = 10, p_open: float = 0.5):
        K, h = check_int("K", K, 1), check_int("h", h, 1)
        self.K, self.h = K, h
        self.pairs = dyck_pairs(K)
        self.p_open = float(p_open)
        super().__init__(
            [c for pair in self.pairs for c in pair],
            name="dyck",
            params={"K": K, "h": h},
            description=f"Dyck({K}, {h}): {K} bracket types, depth <= {h}",
            default_bins=PAPER_WINDOWS["dyck"],
        )
        self.opens = tuple(o for o, _ in self.pairs)
        self.closes = tuple(c for _, c in self.pairs)
        self._count_cache: list[int] = []
        self._dp: list[int] = []

    def is_star_free(self) -> bool:
        """True: bounded-depth Dyck languages are star-free (proof sketch in the module docstring)."""
        return True

    # ------------------------------------------------------------------ analysis, O(len)
    def _scan(self, ids: np.ndarray):
        """-> depth [n+1], top type [n+1] (-1 = empty), valid [n+1]."""
        n = len(ids)
        h = self.h
        depth = [0] * (n + 1)
        top = [-1] * (n + 1)
        valid = [True] * (n + 1)
        stack: list[int] = []
        ok = True
        t = 0
        for x in ids.tolist():
            t += 1
            typ = x >> 1
            if x & 1:  # close
                if stack:
                    if stack[-1] != typ:
                        ok = False
                    stack.pop()
                else:
                    ok = False
            else:
                stack.append(typ)
                if len(stack) > h:
                    ok = False
            depth[t] = len(stack)
            top[t] = stack[-1] if stack else -1
            valid[t] = ok
        return np.array(depth, dtype=np.int64), np.array(top, dtype=np.int64), np.array(valid, dtype=bool)

    def _analyze(self, ids, s, want_trace):
        depth, top, valid = self._scan(ids)
        K, n = self.K, len(ids)
        allowed = np.zeros((n + 1, 2 * K + 1), dtype=bool)
        allowed[:, 0 : 2 * K : 2] = (valid & (depth < self.h))[:, None]
        rows = np.nonzero(valid & (depth > 0))[0]
        allowed[rows, 2 * top[rows] + 1] = True
        allowed[:, 2 * K] = valid & (depth == 0)
        tr = None
        if want_trace:
            opens = self.opens
            tops = [None if x < 0 else opens[x] for x in top.tolist()]
            # stacks as tuples shared along the string: by_depth[j] is the current stack's bottom j
            # symbols, so a pop reuses the tuple already built and only a push makes a new one
            stacks = [()]
            by_depth = [()]
            dl = depth.tolist()
            for t, x in enumerate(ids.tolist(), start=1):
                d = dl[t]
                if x & 1:
                    st = by_depth[d]
                else:
                    st = by_depth[d - 1] + (opens[x >> 1],)
                    if len(by_depth) > d:
                        by_depth[d] = st
                    else:
                        by_depth.append(st)
                stacks.append(st)
            tr = {"depth": depth.tolist(), "top": tops, "stack": stacks}
        return allowed, allowed[:, 2 * K].copy(), tr

    # ------------------------------------------------------------------ counting and sampling
    def count(self, length: int) -> int:
        if length < 0 or length % 2:
            return 0
        cache = self._count_cache
        if not cache:
            self._dp = [1] + [0] * self.h
            cache.append(1)
        K, h = self.K, self.h
        while len(cache) <= length:
            f = self._dp
            g = [0] * (h + 1)
            for d in range(h + 1):
                w = f[d]
                if w:
                    if d < h:
                        g[d + 1] += K * w
                    if d > 0:
                        g[d - 1] += w
            self._dp = g
            cache.append(g[0])
        return cache[length]

    def _sample_length(self, rng: random.Random, length: int) -> Optional[str]:
        if length % 2:
            return None
        rand, p, K, h = rng.random, self.p_open, self.K, self.h
        opens, closes = self.opens, self.closes
        out = []
        stack: list[int] = []
        for r in range(length, 0, -1):
            d = len(stack)
            if d == 0 or (d < r and d < h and rand() < p):
                t = int(rand() * K)
                stack.append(t)
                out.append(opens[t])
            else:
                out.append(closes[stack.pop()])
        return "".join(out)

    # ------------------------------------------------------------------ explicit DFA (small K, h)
    def to_dfa(self, max_states: int = 100_000) -> DFA:
        """The minimal DFA of Dyck(K, h) (states = stacks), for small K and h only."""
        n_states = sum(self.K ** d for d in range(self.h + 1))
        if n_states > max_states:
            raise ValueError(f"Dyck({self.K}, {self.h}) has {n_states} stack states (> max_states={max_states})")
        K, h = self.K, self.h
        opens, closes = self.opens, self.closes
        trans = {}
        states = [()]
        queue = deque([()])
        seen = {()}
        while queue:
            st = queue.popleft()
            for t in range(K):
                if len(st) < h:
                    nxt = st + (t,)
                    trans[(st, opens[t])] = nxt
                    if nxt not in seen:
                        seen.add(nxt)
                        states.append(nxt)
                        queue.append(nxt)
                if st and st[-1] == t:
                    trans[(st, closes[t])] = st[:-1]
        return DFA(states, self.alphabet, trans, (), [()], name=f"dyck({K},{h})-dfa").minimize()
