"""Flip-flop language (Liu et al. 2023, "Exposing attention glitches with flip-flop language modeling").

Strings alternate an instruction from {w, r, i} and a data bit from {0, 1}; the first instruction is
``w``; the bit after ``r`` must equal the bit of the most recent ``w``. A member is a whole number of
(instruction, bit) pairs, at least one: END may follow a complete pair. The language is the same for
every ``p``; ``p`` only sets the sampling distribution FFL(p): after the initial ``w``, each
instruction is ``i`` with probability ``p`` and ``w`` or ``r`` with probability ``(1 - p) / 2`` each;
bits after ``w`` and ``i`` are uniform; the bit after ``r`` is the stored bit. Train: FFL(0.8) with
256 pairs (length 512); evaluate on FFL(0.8) and on the sparse FFL(0.98)
(``languages.get("flipflop", p=0.98)``), both at length 512 (``default_bins``: train and bin0 (512, 512)).
``p`` may also be a list, e.g. ``p=[0.8, 0.98]``: each string draws its ``p`` uniformly from it (a
mixture of densities, Liu et al.'s remedy for long-range glitches; the language is unchanged).

It is regular and star-free (a set/reset memory: its transition monoid is aperiodic, computed by
:meth:`DFA.is_star_free` on the 9-state minimal DFA below). Trace: ``state`` (minimal DFA state),
``stored`` (the bit written by the most recent *completed* write ``w b``, None before the first) and
``instruction`` (the most recent instruction symbol, None at the start; it persists across the bit).
"""
from __future__ import annotations

import random
from typing import Optional, Sequence

from .dfa import DFA, explore_spec
from .paper import PAPER_WINDOWS

__all__ = ["FlipFlop"]


def _step(q, c):
    mode, stored = q  # mode: start | instr (a pair is complete) | w | i | r (a bit is expected)
    if mode in ("start", "instr"):
        if c == "w":
            return ("w", stored)
        if mode == "instr" and c in "ri":
            return (c, stored)
        return None
    if c not in "01":
        return None
    if mode == "w":
        return ("instr", c)
    if mode == "i":
        return ("instr", stored)
    return ("instr", stored) if c == stored else None  # mode r


class FlipFlop(DFA):
    """FFL(p): the flip-flop language with Liu et al.'s sampling distribution (see the module docstring)."""

    state_variables = ("state", "stored", "instruction")

    def __init__(self, p: float | Sequence[float] = 0.8):
        ps = (p,) if isinstance(p, (int, float)) else tuple(p)
        if not ps:
            raise ValueError("p must be a probability or a non-empty list of them")
        ps = tuple(float(x) for x in ps)
        for x in ps:
            if not 0 <= x < 1:
                raise ValueError(f"p must be in [0, 1), got {x}")
        self.ps = ps
        self.p = ps[0] if len(ps) == 1 else ps
        label = "|".join(f"{x:g}" for x in ps)
        super().__init__(
            *explore_spec("wri01", ("start", None), _step, lambda q: q[0] == "instr"),
            name="flipflop",
            params={"p": self.p if len(ps) == 1 else list(ps)},
            description=f"flip-flop FFL({label}): w/r/i instructions with bits; r repeats the last written bit",
            default_bins=PAPER_WINDOWS["flipflop"],
        )

    def _extra_trace(self, ids, s, states):
        stored, instr = [None], [None]
        cur_s, cur_i, prev = None, None, None
        for c in s:
            if c in "wri":
                cur_i = c
            elif prev == "w":
                cur_s = c
            prev = c
            stored.append(cur_s)
            instr.append(cur_i)
        return {"stored": stored, "instruction": instr}

    def _sample_length(self, rng: random.Random, length: int) -> Optional[str]:
        if length < 2 or length % 2:
            return None
        rand = rng.random
        p = self.ps[0] if len(self.ps) == 1 else rng.choice(self.ps)  # a mixture: one p per string
        out = []
        stored = None
        for t in range(length // 2):
            if t == 0:
                op = "w"
            else:
                u = rand()
                op = "i" if u < p else ("w" if u < p + (1 - p) / 2 else "r")
            if op == "r":
                bit = stored
            else:
                bit = "0" if rand() < 0.5 else "1"
                if op == "w":
                    stored = bit
            out.append(op)
            out.append(bit)
        return "".join(out)

    def _draw(self, length, need, rng, exclude, seen, cap):
        # the DFA's exact enumeration would be uniform, not FFL(p): always use the generative process
        return super(DFA, self)._draw(length, need, rng, exclude, seen, cap)
