"""The regular languages of the suite (SPEC §3), each a minimal :class:`~languages.dfa.DFA`.

Star-free (11): tomita1, tomita2, tomita4, tomita7, d2, d3, d4, d12, abcde, ab_d_bc, zot.
Non-star-free (7): parity, aa_star, aaaa_star, abab_star, tomita3, tomita5, tomita6.
(The split is *computed* by :meth:`DFA.is_star_free` from each transition monoid; the test suite
checks it against SPEC §3.)

Definitions (alphabet in brackets):

* ``tomita1`` [0,1]: ``1*``.
* ``tomita2`` [0,1]: ``(10)*``.
* ``tomita3`` [0,1]: no odd-length maximal block of 1s followed, anywhere later, by an odd-length
  maximal block of 0s (SPEC §3; the reading of Weiss et al.'s widely used Tomita code). A 0-block is
  complete when a 1 or the end of the string follows it: ``10`` and ``100110`` are rejected, ``100``,
  ``1001`` and ``110`` accepted. Judgment call: Bhattamishra et al.'s generator (used by the paper's
  repository) implements a different 5-state automaton in which only the 0-block *immediately* after
  the odd 1-block counts (it accepts ``100110``); it is available, unregistered, as
  :func:`tomita3_next_block`. Both are non-star-free (5-state minimal DFAs, dead state included).
* ``tomita4`` [0,1]: no ``000`` substring.
* ``tomita5`` [0,1]: even number of 0s and even number of 1s.
* ``tomita6`` [0,1]: ``(#0 - #1) ≡ 0 (mod 3)``.
* ``tomita7`` [0,1]: ``0*1*0*1*``.
* ``d2``, ``d3``, ``d4``, ``d12`` [a,b]: ``D_n``, Dyck-1 of depth at most ``n`` with ``a`` = open and
  ``b`` = close: ``D_0 = ε``, ``D_n = (a D_{n-1} b)*``. The empty string is a member. Trace also gives
  ``depth`` (#a - #b) and ``top`` (``"a"`` when depth > 0, else None).
* ``abcde`` [a..e]: ``aa*bb*cc*dd*ee*`` (every letter at least once, in order; shortest member: 5).
* ``ab_d_bc`` [a,b,c,d]: ``{a,b}* d {b,c}*`` (exactly one ``d``).
* ``zot`` [0,1,2]: ``{0,1,2}* 0 2*`` (the last symbol other than 2 is a 0).
* ``parity`` [0,1]: even number of 1s (the empty string included).
* ``aa_star`` [a]: ``(aa)*``; ``aaaa_star`` [a]: ``(aaaa)*``; ``abab_star`` [a,b]: ``(abab)*``.

Membership-target languages (SPEC §2): parity, aa_star, aaaa_star, abab_star, tomita5, tomita6.

Default length windows (``default_bins``): Tomita train/bin0 [1, 100], bin1 [101, 150]; D_n train/bin0
[1, 100], bin1 [101, 200] (SPEC §3). parity, abcde, ab_d_bc, zot: train/bin0 [2, 50], bin1 [51, 100].
aa_star [2, 500] / [501, 600] and aaaa_star, abab_star [4, 500] / [501, 600], as in the paper's
repository: these languages have one string per admissible length, so [2, 50] would hold only 25 / 12
strings (judgment call; ``default_sizes`` then shrinks the splits to what the windows hold).
"""
from __future__ import annotations

import numpy as np

from .dfa import DFA, explore, explore_spec

__all__ = ["REGULAR_FACTORIES", "DnLanguage", "tomita3_next_block"]

TOMITA_BINS = {"train": (1, 100), "bin0": (1, 100), "bin1": (101, 150)}
DN_BINS = {"train": (1, 100), "bin0": (1, 100), "bin1": (101, 200)}
SHORT_BINS = {"train": (2, 50), "bin0": (2, 50), "bin1": (51, 100)}
AA_BINS = {"train": (2, 500), "bin0": (2, 500), "bin1": (501, 600)}
AAAA_BINS = {"train": (4, 500), "bin0": (4, 500), "bin1": (501, 600)}


def _tomita1() -> DFA:
    return explore("01", 0, lambda q, c: 0 if c == "1" else None, lambda q: True,
                   name="tomita1", description="Tomita 1: 1*", default_bins=TOMITA_BINS)


def _tomita2() -> DFA:
    def step(q, c):
        if q == 0 and c == "1":
            return 1
        if q == 1 and c == "0":
            return 0
        return None

    return explore("01", 0, step, lambda q: q == 0, name="tomita2", description="Tomita 2: (10)*",
                   default_bins=TOMITA_BINS)


def _tomita3() -> DFA:
    # E: no odd 1-block completed yet, not inside an odd 1-run (start, 0-runs, even 1-runs)
    # O: inside an odd 1-run, no odd 1-block completed before
    # Zo: an odd 1-block has been completed and we are inside an odd 0-run (rejecting: if it ends,
    #     the forbidden pattern is complete); Ze: an odd 1-block has been completed, not in an odd 0-run
    table = {
        ("E", "0"): "E", ("E", "1"): "O",
        ("O", "0"): "Zo", ("O", "1"): "E",
        ("Zo", "0"): "Ze",
        ("Ze", "0"): "Zo", ("Ze", "1"): "Ze",
    }
    return explore("01", "E", lambda q, c: table.get((q, c)), lambda q: q != "Zo", name="tomita3",
                   description="Tomita 3: no odd-length 1-block followed later by an odd-length 0-block",
                   default_bins=TOMITA_BINS)


def tomita3_next_block() -> DFA:
    """Bhattamishra et al.'s Tomita-3 automaton: forbidden is an odd-length 1-block whose *next* 0-block
    has odd length (not registered; see the module docstring)."""
    table = {
        ("E", "0"): "E", ("E", "1"): "O",
        ("O", "0"): "Z1", ("O", "1"): "E",
        ("Z1", "0"): "Z2",
        ("Z2", "0"): "Z1", ("Z2", "1"): "O",
    }
    return explore("01", "E", lambda q, c: table.get((q, c)), lambda q: q != "Z1", name="tomita3_next_block",
                   description="Tomita 3 as in Bhattamishra et al.: no odd 1-block immediately followed by an "
                               "odd 0-block", default_bins=TOMITA_BINS)


def _tomita4() -> DFA:
    def step(q, c):  # q = number of trailing 0s
        if c == "1":
            return 0
        return q + 1 if q < 2 else None

    return explore("01", 0, step, lambda q: True, name="tomita4", description="Tomita 4: no 000 substring",
                   default_bins=TOMITA_BINS)


def _tomita5() -> DFA:
    def step(q, c):
        z, o = q
        return ((z + 1) % 2, o) if c == "0" else (z, (o + 1) % 2)

    return explore("01", (0, 0), step, lambda q: q == (0, 0), name="tomita5", membership_target=True,
                   description="Tomita 5: even number of 0s and even number of 1s", default_bins=TOMITA_BINS)


def _tomita6() -> DFA:
    return explore("01", 0, lambda q, c: (q + (1 if c == "0" else -1)) % 3, lambda q: q == 0,
                   name="tomita6", membership_target=True,
                   description="Tomita 6: (#0 - #1) = 0 mod 3", default_bins=TOMITA_BINS)


def _tomita7() -> DFA:
    def step(q, c):  # q = index of the current block in 0*1*0*1*
        want = "0" if q % 2 == 0 else "1"
        if c == want:
            return q
        return q + 1 if q < 3 else None

    return explore("01", 0, step, lambda q: True, name="tomita7", description="Tomita 7: 0*1*0*1*",
                   default_bins=TOMITA_BINS)


class DnLanguage(DFA):
    """``D_n``: Dyck-1 over ``a`` (open) / ``b`` (close) with depth at most ``n``; ``D_n = (a D_{n-1} b)*``.

    Trace: ``state`` (minimal DFA state = the depth for live prefixes; ``n + 1`` = dead), ``depth``
    (#a - #b of the prefix) and ``top`` (``"a"`` if depth > 0 else None).
    """

    state_variables = ("state", "depth", "top")

    def __init__(self, n: int):
        self.n = int(n)

        def step(q, c):
            if c == "a":
                return q + 1 if q < self.n else None
            return q - 1 if q > 0 else None

        super().__init__(*explore_spec("ab", 0, step, lambda q: q == 0), name=f"d{self.n}",
                         description=f"D_{self.n}: Dyck-1 over a/b of depth <= {self.n}",
                         default_bins=DN_BINS)

    def _extra_trace(self, ids, s, states):
        depth = np.concatenate([[0], np.cumsum(1 - 2 * ids)]).tolist()
        return {"depth": depth, "top": ["a" if d > 0 else None for d in depth]}


def _abcde() -> DFA:
    def step(q, c):  # q = number of distinct letters begun so far
        j = "abcde".index(c)
        if q >= 1 and j == q - 1:
            return q
        if j == q:
            return q + 1
        return None

    return explore("abcde", 0, step, lambda q: q == 5, name="abcde", description="aa*bb*cc*dd*ee*",
                   default_bins=SHORT_BINS)


def _ab_d_bc() -> DFA:
    def step(q, c):
        if q == 0:
            return 0 if c in "ab" else (1 if c == "d" else None)
        return 1 if c in "bc" else None

    return explore("abcd", 0, step, lambda q: q == 1, name="ab_d_bc", description="{a,b}* d {b,c}*",
                   default_bins=SHORT_BINS)


def _zot() -> DFA:
    # q = last symbol other than 2 ("" before any)
    return explore("012", "", lambda q, c: q if c == "2" else c, lambda q: q == "0", name="zot",
                   description="{0,1,2}* 0 2*", default_bins=SHORT_BINS)


def _parity() -> DFA:
    return explore("01", 0, lambda q, c: (q + (c == "1")) % 2, lambda q: q == 0, name="parity",
                   membership_target=True, description="PARITY: even number of 1s", default_bins=SHORT_BINS)


def _a_power(k: int, name: str, bins: dict) -> DFA:
    return explore("a", 0, lambda q, c: (q + 1) % k, lambda q: q == 0, name=name, membership_target=True,
                   description=f"({'a' * k})*", default_bins=bins)


def _abab_star() -> DFA:
    return explore("ab", 0, lambda q, c: (q + 1) % 4 if c == "abab"[q] else None, lambda q: q == 0,
                   name="abab_star", membership_target=True, description="(abab)*", default_bins=AAAA_BINS)


REGULAR_FACTORIES = {
    "tomita1": _tomita1,
    "tomita2": _tomita2,
    "tomita3": _tomita3,
    "tomita4": _tomita4,
    "tomita5": _tomita5,
    "tomita6": _tomita6,
    "tomita7": _tomita7,
    "d2": lambda: DnLanguage(2),
    "d3": lambda: DnLanguage(3),
    "d4": lambda: DnLanguage(4),
    "d12": lambda: DnLanguage(12),
    "abcde": _abcde,
    "ab_d_bc": _ab_d_bc,
    "zot": _zot,
    "parity": _parity,
    "aa_star": lambda: _a_power(2, "aa_star", AA_BINS),
    "aaaa_star": lambda: _a_power(4, "aaaa_star", AAAA_BINS),
    "abab_star": _abab_star,
}
