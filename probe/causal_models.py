"""High-level causal models: the automaton as named variables that can be swapped between two prefixes.

An interchange intervention (:mod:`probe.interchange`) puts a source prefix's state of some layers into
a base prefix's state; the causal model says what the model should then predict. Each variable mirrors
a layer of the language's construction: :class:`DyckCausalModel` has ``depth`` (the layer-1 counter)
and ``top`` (the per-depth memory of open brackets, whose block at the current depth is the top of the
stack), so swapping the layer that holds ``depth`` means "source depth, base memory". The
counterfactual is realised as a *witness* string whose automaton state is the counterfactual state
(:meth:`CausalModel.witness`; ``None`` where it is undefined, e.g. the base memory has no block at a
depth the source reaches); :meth:`CausalModel.value` labels a prefix for probes.
"""
from __future__ import annotations

from typing import Any, Optional


class CausalModel:
    """An automaton abstraction with named variables that can be swapped between two prefixes."""

    variables: tuple[str, ...] = ()

    def witness(self, base_prefix: str, source_prefix: str, variable: str) -> Optional[str]:
        """A string whose automaton state is the counterfactual one, or None when undefined."""
        if variable == "all":
            return source_prefix
        if variable not in self.variables:
            raise KeyError(f"unknown variable {variable!r}; expected one of {('all',) + self.variables}")
        return self._witness(base_prefix, source_prefix, variable)

    def _witness(self, base_prefix: str, source_prefix: str, variable: str) -> Optional[str]:
        raise NotImplementedError

    def value(self, prefix: str, variable: str) -> Any:
        """The variable's value after ``prefix`` (a label for probes; hashable)."""
        raise KeyError(f"unknown variable {variable!r}; expected one of {self.variables}")

    def components(self, prefix: str, variable: str) -> tuple:
        """What a swap of ``variable`` moves, as probe targets (default: the value itself)."""
        return (self.value(prefix, variable),)


class DyckCausalModel(CausalModel):
    """Dyck(K, h) as the construction sees it: a depth counter and one memory block per depth.

    ``memory[d]`` is the bracket most recently opened at depth ``d`` (blocks above the current depth
    keep stale values, which are never read before being overwritten).
    """

    variables = ("depth", "top")

    def __init__(self, language: Any) -> None:
        self.language = language
        self.opens = {o for o, _ in language.pairs}

    def state(self, prefix: str) -> tuple[int, dict[int, str]]:
        depth, memory = 0, {}
        for ch in prefix:
            if ch in self.opens:
                depth += 1
                memory[depth] = ch
            else:
                depth -= 1
        return depth, memory

    def _witness(self, base_prefix: str, source_prefix: str, variable: str) -> Optional[str]:
        (db, mb), (ds, ms) = self.state(base_prefix), self.state(source_prefix)
        depth, memory = (ds, mb) if variable == "depth" else (db, ms)
        if any(d not in memory for d in range(1, depth + 1)):
            return None
        return "".join(memory[d] for d in range(1, depth + 1))

    def value(self, prefix: str, variable: str) -> Any:
        depth, memory = self.state(prefix)
        if variable == "depth":
            return depth
        if variable == "top":
            return memory[depth] if depth else "-"
        return super().value(prefix, variable)

    def components(self, prefix: str, variable: str) -> tuple:
        """``top``: the whole per-depth memory (what a swap of it moves), one block per depth."""
        if variable != "top":
            return super().components(prefix, variable)
        memory = self.state(prefix)[1]
        return tuple(memory.get(d, "-") for d in range(1, self.language.h + 1))


class FlipFlopCausalModel(CausalModel):
    """Flip-flop: the stored bit (layer-2 memory) and the last instruction (layer-1 channel)."""

    variables = ("stored",)

    def _witness(self, base_prefix: str, source_prefix: str, variable: str) -> Optional[str]:
        bit = self.value(source_prefix, "stored")
        if bit == "-":
            return None
        # Same phase as the base: a complete pair, or a pair plus the base's pending instruction.
        w = "w" + bit
        if len(base_prefix) % 2 == 1:
            if base_prefix[-1] == "w":
                return None  # the pending write makes the stored bit irrelevant
            w += base_prefix[-1]
        return w

    def value(self, prefix: str, variable: str) -> Any:
        """``stored``: the bit of the last complete write, "-" before any."""
        if variable != "stored":
            return super().value(prefix, variable)
        return next((prefix[i + 1] for i in range(len(prefix) - 2, -1, -1)
                     if prefix[i] == "w" and i % 2 == 0), "-")


class ParityCausalModel(CausalModel):
    """PARITY: the one variable is the number of 1s mod 2 (the signed construction's sign bit)."""

    variables = ("parity",)

    def _witness(self, base_prefix: str, source_prefix: str, variable: str) -> Optional[str]:
        return "1" * self.value(source_prefix, "parity")

    def value(self, prefix: str, variable: str) -> Any:
        if variable != "parity":
            return super().value(prefix, variable)
        return prefix.count("1") % 2


class CounterCausalModel(CausalModel):
    """One-counter languages (SPEC §1 result 5): Dyck-1's ``depth`` (#( - #)) and a^n b^n's
    ``counter`` (#a - #b). The counter automaton's state is the counter and, for a^n b^n, the phase
    (before or after the first b); the allowed continuations depend on both (Dyck-1: ``)`` iff the
    depth is positive, END iff it is 0; a^n b^n after a b: ``b`` while the counter is positive, END
    at 0). The counterfactual keeps the base's phase and takes the source's counter."""

    def __init__(self, language: Any) -> None:
        name = getattr(language, "name", "")
        if name not in ("dyck1", "anbn"):
            raise ValueError(f"CounterCausalModel covers dyck1 and anbn, not {name!r}")
        self.up, self.down = ("(", ")") if name == "dyck1" else ("a", "b")
        self.variables = ("depth",) if name == "dyck1" else ("counter",)
        self.phased = name == "anbn"

    def _witness(self, base_prefix: str, source_prefix: str, variable: str) -> Optional[str]:
        c = self.value(source_prefix, variable)
        if c < 0:
            return None
        if self.phased and self.down in base_prefix:  # after the first b: a^(c+1) b has counter c
            return self.up * (c + 1) + self.down
        if self.phased and c == 0 and base_prefix:
            return None  # a non-empty a-phase prefix has a positive counter
        return self.up * c

    def value(self, prefix: str, variable: str) -> Any:
        if variable not in self.variables:
            return super().value(prefix, variable)
        return prefix.count(self.up) - prefix.count(self.down)


def causal_model_for(language: Any) -> CausalModel:
    if getattr(language, "pairs", None) and getattr(language, "name", "") == "dyck":
        return DyckCausalModel(language)
    if getattr(language, "name", "") == "flipflop":
        return FlipFlopCausalModel()
    if getattr(language, "name", "") == "parity":
        return ParityCausalModel()
    if getattr(language, "name", "") in ("dyck1", "anbn"):
        return CounterCausalModel(language)
    return CausalModel()
