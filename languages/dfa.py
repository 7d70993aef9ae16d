"""Deterministic finite automata as languages: minimization, the star-free test, counting, sampling.

``DFA(states, alphabet, transitions, start, accepting)`` accepts any hashable state names;
``transitions`` maps ``(state, symbol)`` to a state, and every missing entry goes to an implicit dead
(rejecting, absorbing) state. A DFA is a :class:`~languages.base.Language`: it samples, accepts, gives
allowed-next sets and traces.

Everything is computed on the **minimal** DFA, numbered canonically: breadth-first from the start
state, symbols in alphabet order, with the dead state (the one state from which no accepting state is
reachable, if any is reachable) numbered last. ``trace(s)["state"]`` is this minimal-DFA state id,
whatever names the user gave; :meth:`DFA.run` gives the user's own states. ``minimize()`` returns that
minimal DFA (complete: the dead state is explicit).

Star-freeness (Schützenberger): a regular language is star-free iff its syntactic monoid -- the
transition monoid of its minimal DFA -- is aperiodic, i.e. every element ``m`` has ``m^k == m^(k+1)``
for some ``k``. :meth:`DFA.is_star_free` enumerates the monoid (closure of the letters' state maps
under composition) and checks each element's powers.

Sampling: :meth:`DFA.count` counts members of each length exactly (dynamic programming over states,
Python integers), and a string of a given length is drawn uniformly among the members of that length
by walking the DFA with those counts. Small lengths are enumerated outright when most of their
members are asked for.
"""
from __future__ import annotations

import random
from collections import deque
from typing import Any, Callable, Hashable, Iterable, Optional

import numpy as np

from .base import Language

__all__ = ["DFA", "explore", "explore_spec"]


class DFA(Language):
    """A language given by a deterministic finite automaton (see the module docstring)."""

    state_variables = ("state",)

    def __init__(
        self,
        states: Iterable[Hashable],
        alphabet: Iterable[str],
        transitions: dict,
        start: Hashable,
        accepting: Iterable[Hashable],
        *,
        name: str = "dfa",
        params: Optional[dict] = None,
        membership_target: bool = False,
        description: str = "",
        default_bins: Optional[dict] = None,
    ):
        super().__init__(
            alphabet,
            name=name,
            params=params,
            membership_target=membership_target,
            description=description,
            default_bins=default_bins,
        )
        self.states = tuple(states)
        if len(set(self.states)) != len(self.states):
            raise ValueError("DFA states must be distinct")
        pos = {q: i for i, q in enumerate(self.states)}
        if start not in pos:
            raise ValueError(f"start state {start!r} is not among the states")
        self.start = start
        self.accepting = frozenset(accepting)
        for q in self.accepting:
            if q not in pos:
                raise ValueError(f"accepting state {q!r} is not among the states")
        self.transitions = _transition_dict(transitions)
        n, S = len(self.states), len(self.alphabet)
        delta = [[n] * S for _ in range(n + 1)]  # index n: the implicit dead state
        for key, r in self.transitions.items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise ValueError(f"transition keys must be (state, symbol) pairs, got {key!r}")
            q, c = key
            if q not in pos:
                raise ValueError(f"transition from unknown state {q!r}")
            if c not in self._index:
                raise ValueError(f"transition on symbol {c!r}, which is not in the alphabet {self.alphabet!r}")
            if r not in pos:
                raise ValueError(f"transition ({q!r}, {c!r}) goes to unknown state {r!r}")
            delta[pos[q]][self._index[c]] = pos[r]
        self._pos = pos
        self._odelta = delta
        acc = [q in self.accepting for q in self.states] + [False]
        self._build_minimal(delta, acc, pos[start])
        self._counts: list[list[int]] = []
        self._monoid: Optional[list[tuple]] = None
        self._star_free: Optional[bool] = None

    # ------------------------------------------------------------------ minimization
    def _build_minimal(self, delta: list[list[int]], acc: list[bool], start: int) -> None:
        S = len(self.alphabet)
        # reachable states
        reach = {start}
        queue = deque([start])
        while queue:
            q = queue.popleft()
            for r in delta[q]:
                if r not in reach:
                    reach.add(r)
                    queue.append(r)
        rs = sorted(reach)
        # Moore partition refinement
        block = {q: int(acc[q]) for q in rs}
        n_blocks = len(set(block.values()))
        while True:
            sig = {q: (block[q],) + tuple(block[r] for r in delta[q]) for q in rs}
            ids: dict[tuple, int] = {}
            new = {q: ids.setdefault(sig[q], len(ids)) for q in rs}
            if len(ids) == n_blocks:
                block = new
                break
            block, n_blocks = new, len(ids)
        # block-level automaton
        bdelta: dict[int, list[int]] = {}
        bacc: dict[int, bool] = {}
        for q in rs:
            b = block[q]
            if b not in bdelta:
                bdelta[b] = [block[r] for r in delta[q]]
                bacc[b] = acc[q]
        # co-accessible blocks (can reach an accepting block)
        rev: dict[int, set] = {b: set() for b in bdelta}
        for b, row in bdelta.items():
            for r in row:
                rev[r].add(b)
        live = {b for b in bdelta if bacc[b]}
        queue = deque(live)
        while queue:
            b = queue.popleft()
            for a in rev[b]:
                if a not in live:
                    live.add(a)
                    queue.append(a)
        dead_blocks = [b for b in bdelta if b not in live]  # at most one after minimization
        # canonical numbering: BFS from the start, alphabet order, dead state last
        order: list[int] = []
        num: dict[int, int] = {}
        sb = block[start]
        queue = deque([sb])
        seen = {sb}
        while queue:
            b = queue.popleft()
            if b not in dead_blocks:
                num[b] = len(order)
                order.append(b)
            for r in bdelta[b]:
                if r not in seen:
                    seen.add(r)
                    queue.append(r)
        for b in dead_blocks:
            num[b] = len(order)
            order.append(b)
        m = len(order)
        self._mdelta = [[num[r] for r in bdelta[b]] for b in order]
        self._macc = [bool(bacc[b]) for b in order]
        self._mlive = [b in live for b in order]
        self._mdead = num[dead_blocks[0]] if dead_blocks else None
        self._mstart = num[sb]  # always 0
        # original state index -> minimal id (unreachable states -> None)
        self._omap = {q: num[block[q]] for q in rs}
        # numpy tables
        table = np.zeros((m, S + 1), dtype=bool)
        for q in range(m):
            for j, r in enumerate(self._mdelta[q]):
                table[q, j] = self._mlive[r]
            table[q, S] = self._macc[q]
        self._allowed_table = table
        self._acc_arr = np.array(self._macc, dtype=bool)

    @property
    def num_states(self) -> int:
        """Number of states of the minimal complete DFA (dead state included if there is one)."""
        return len(self._mdelta)

    @property
    def dead_state(self) -> Optional[int]:
        """Minimal-DFA id of the dead state, or None if every state can still reach acceptance."""
        return self._mdead

    def minimize(self, **overrides: Any) -> "DFA":
        """The minimal complete DFA with canonical int states ``0..num_states-1`` (same language).

        Keeps name, params, description, membership_target and default_bins unless overridden.
        The type is :class:`DFA` (subclass extras such as additional trace variables are not kept).
        """
        S = self.alphabet
        m = self.num_states
        trans = {(q, S[j]): r for q in range(m) for j, r in enumerate(self._mdelta[q])}
        kw = dict(
            name=self.name,
            params=self.params,
            membership_target=self.membership_target,
            description=self.description,
            default_bins=self.default_bins,
        )
        kw.update(overrides)
        return DFA(range(m), S, trans, 0, [q for q in range(m) if self._macc[q]], **kw)

    def minimal_transitions(self) -> list[list[int]]:
        """``table[q][j]``: minimal-DFA successor of state ``q`` on ``alphabet[j]``."""
        return [list(row) for row in self._mdelta]

    @property
    def accepting_states(self) -> tuple[int, ...]:
        """Accepting minimal-DFA state ids."""
        return tuple(q for q in range(self.num_states) if self._macc[q])

    # ------------------------------------------------------------------ star-freeness
    def transition_monoid(self, max_size: int = 200_000) -> list[tuple]:
        """The transition monoid of the minimal DFA (= the syntactic monoid): every map ``q -> q·w``
        as a tuple, the identity (empty word) first. RuntimeError beyond ``max_size`` elements."""
        if self._monoid is None:
            m = self.num_states
            ident = tuple(range(m))
            gens = [tuple(self._mdelta[q][j] for q in range(m)) for j in range(len(self.alphabet))]
            seen = {ident: None}
            order = [ident]
            queue = deque([ident])
            while queue:
                e = queue.popleft()
                for g in gens:
                    f = tuple(g[x] for x in e)  # read the word of e, then the letter g
                    if f not in seen:
                        seen[f] = None
                        order.append(f)
                        queue.append(f)
                        if len(order) > max_size:
                            raise RuntimeError(f"transition monoid of {self.name!r} exceeds {max_size} elements")
            self._monoid = order
        return list(self._monoid)

    def is_star_free(self) -> bool:
        """True iff the transition monoid of the minimal DFA is aperiodic (Schützenberger)."""
        if self._star_free is None:
            self._star_free = all(_aperiodic_element(e) for e in self.transition_monoid())
        return self._star_free

    # ------------------------------------------------------------------ running
    def _states(self, ids: np.ndarray) -> np.ndarray:
        delta = self._mdelta
        q = 0
        out = [0]
        append = out.append
        for c in ids.tolist():
            q = delta[q][c]
            append(q)
        return np.array(out, dtype=np.int64)

    def minimal_states(self, s: str) -> list[int]:
        """Minimal-DFA state after each prefix: ``len(s) + 1`` ints (entry 0 = start = 0)."""
        return self._states(self.symbol_ids(s)).tolist()

    def run(self, s: str) -> list:
        """This DFA's own states (the user's names) after each prefix: ``len(s) + 1`` entries; None
        stands for the implicit dead state."""
        ids = self.symbol_ids(s)
        n = len(self.states)
        q = self._pos[self.start]
        out = [self.start]
        for c in ids.tolist():
            q = self._odelta[q][c]
            out.append(None if q == n else self.states[q])
        return out

    def accepts(self, s: str) -> bool:
        delta = self._mdelta
        q = 0
        for c in self.symbol_ids(s).tolist():
            q = delta[q][c]
        return self._macc[q]

    def _analyze(self, ids: np.ndarray, s: str, want_trace: bool):
        states = self._states(ids)
        allowed = self._allowed_table[states]
        member = self._acc_arr[states]
        tr = None
        if want_trace:
            tr = {"state": states.tolist()}
            tr.update(self._extra_trace(ids, s, states))
        return allowed, member, tr

    def _extra_trace(self, ids: np.ndarray, s: str, states: np.ndarray) -> dict[str, list]:
        """Subclasses add language-specific variables here (``n + 1`` entries each)."""
        return {}

    # ------------------------------------------------------------------ counting and sampling
    def _count_table(self, upto: int) -> list[list[int]]:
        """``N[r][q]``: number of words of length ``r`` leading from ``q`` to acceptance."""
        N = self._counts
        if not N:
            N.append([int(a) for a in self._macc])
        delta = self._mdelta
        while len(N) <= upto:
            prev = N[-1]
            N.append([sum(prev[r] for r in row) for row in delta])
        return N

    def count(self, length: int) -> int:
        if length < 0:
            return 0
        return self._count_table(length)[length][0]

    def _sample_length(self, rng: random.Random, length: int) -> Optional[str]:
        N = self._count_table(length)
        q = 0
        if N[length][q] == 0:
            return None
        delta, alphabet = self._mdelta, self.alphabet
        out = []
        for r in range(length, 0, -1):
            x = rng.randrange(N[r][q])
            row = N[r - 1]
            for j, nxt in enumerate(delta[q]):
                w = row[nxt]
                if x < w:
                    out.append(alphabet[j])
                    q = nxt
                    break
                x -= w
        return "".join(out)

    def enumerate_length(self, length: int, limit: Optional[int] = None) -> list[str]:
        """All members of exactly ``length`` symbols, in alphabet (lexicographic) order (at most ``limit``)."""
        N = self._count_table(length)
        delta, alphabet = self._mdelta, self.alphabet
        out: list[str] = []
        stack: list[tuple[int, int, str]] = [(0, length, "")]
        while stack:
            q, r, pre = stack.pop()
            if r == 0:
                out.append(pre)
                if limit is not None and len(out) >= limit:
                    break
                continue
            for j in range(len(alphabet) - 1, -1, -1):
                nxt = delta[q][j]
                if N[r - 1][nxt]:
                    stack.append((nxt, r - 1, pre + alphabet[j]))
        return out

    def _draw(self, length, need, rng, exclude, seen, cap):
        if cap is not None and cap <= 4096 and 2 * need >= cap:
            pool = [s for s in self.enumerate_length(length) if s not in exclude and s not in seen]
            pick = pool if len(pool) <= need else rng.sample(pool, need)
            seen.update(pick)
            return pick
        return super()._draw(length, need, rng, exclude, seen, cap)


def _aperiodic_element(e: tuple) -> bool:
    """Whether the powers of the map ``e`` end in a fixed point (cycle of length 1)."""
    first = {e: 1}
    p = e
    k = 1
    while True:
        p = tuple(e[x] for x in p)  # p = p · e
        k += 1
        if p in first:
            return k - first[p] == 1
        first[p] = k


def explore_spec(
    alphabet: Iterable[str],
    start: Hashable,
    step: Callable[[Any, str], Any],
    accept: Callable[[Any], bool],
) -> tuple:
    """``(states, alphabet, transitions, start, accepting)`` of the *minimal* canonical DFA whose
    states are those reachable from ``start`` by ``step(state, symbol)`` (None = dead state) and whose
    accepting states satisfy ``accept``. Pass it to :class:`DFA` (or a subclass)."""
    alphabet = tuple(alphabet)
    states = [start]
    seen = {start}
    trans = {}
    queue = deque([start])
    while queue:
        q = queue.popleft()
        for c in alphabet:
            r = step(q, c)
            if r is None:
                continue
            trans[(q, c)] = r
            if r not in seen:
                seen.add(r)
                states.append(r)
                queue.append(r)
    d = DFA(states, alphabet, trans, start, [q for q in states if accept(q)])
    m = d.num_states
    mtrans = {(q, alphabet[j]): r for q in range(m) for j, r in enumerate(d._mdelta[q])}
    return range(m), alphabet, mtrans, 0, list(d.accepting_states)


def _transition_dict(transitions: Any) -> dict:
    """``{(state, symbol): target}`` from a mapping, or from an iterable of ``((state, symbol), target)``
    pairs or ``(state, symbol, target)`` triples; two different targets for one ``(state, symbol)``
    are an error (a plain ``dict(...)`` would silently keep the last)."""
    if isinstance(transitions, dict):
        return dict(transitions)
    out: dict = {}
    for item in transitions:
        if isinstance(item, tuple) and len(item) == 3:
            key, r = (item[0], item[1]), item[2]
        elif isinstance(item, tuple) and len(item) == 2:
            key, r = item
        else:
            raise ValueError(f"a transition must be ((state, symbol), target) or (state, symbol, target), got {item!r}")
        if key in out and out[key] != r:
            raise ValueError(f"conflicting transitions for {key!r}: to {out[key]!r} and to {r!r}")
        out[key] = r
    return out


def explore(
    alphabet: Iterable[str],
    start: Hashable,
    step: Callable[[Any, str], Any],
    accept: Callable[[Any], bool],
    **kwargs: Any,
) -> DFA:
    """A minimal DFA built from a step function (see :func:`explore_spec`); keyword arguments go to
    :class:`DFA`. Example: ``explore("01", 0, lambda q, c: (q + (c == "1")) % 2, lambda q: q == 0)``
    is PARITY."""
    return DFA(*explore_spec(alphabet, start, step, accept), **kwargs)
