"""Causal interventions scored against the automaton: correlation is not use.

Interchange interventions (Geiger et al. 2021) on recurrent models
-------------------------------------------------------------------
A recurrent model (HookedMamba, a construction) carries everything it knows about a prefix in its
per-layer state. Run a *base* prefix and a *source* prefix, put the source's state of chosen layers
into the base's state, and continue on the base's suffix: :func:`interchange`. The high-level causal
model (the automaton, with variables that mirror the construction's layers) says what the model
should then predict: :class:`DyckCausalModel` has ``depth`` (the layer-1 counter) and ``top`` (the
per-depth memory of open brackets, whose block at the current depth is the top of the stack);
swapping the layer that holds ``depth`` means "source depth, base memory". The counterfactual is
realised as a *witness* string whose automaton state is the counterfactual state, and the expected
allowed-next sets are ``language.allowed_next(witness + base_suffix)``. A pair whose counterfactual
is undefined (e.g. the base memory has no block at a depth the source reaches), or whose base
suffix starts with a symbol the counterfactual state forbids, is excluded and counted. Scoring runs
along the base suffix while it stays a viable continuation of the witness.

Interchange intervention accuracy (IIA) is the fraction of pairs whose predicted allowed sets equal
the counterfactual ones at every scored position. The random-pair baseline scores the same
intervened outputs against the counterfactual of an unrelated source: how often they agree by
chance.

Positions: a split point ``t`` (1 <= t <= len(s)) means the prefix run reads model positions
``0..t-1`` (BOS + ``s[:t-1]``), the state is swapped there, and the continuation reads positions
``t..`` whose outputs predict ``allowed_next(s)[t:]``.

Subspace interventions (probe directions)
-----------------------------------------
:func:`steer` adds ``amount`` units of a probe's readout along its minimum-norm direction at one
hook site and position (the recurrence carries the edit forward); :func:`patch_subspace` copies only
the span of given directions from a source activation; :func:`ablate_subspace` replaces the span by
its mean (mean-projection ablation); :func:`random_subspace` gives a same-rank control. Each is a
context manager over ``model.hooks`` and restores the model on exit.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from hooks import metrics
from languages.datasets import Vocab, encode_batch
from languages.vocab import END, FIRST_OUTPUT_ID


# --------------------------------------------------------------------------- high-level models


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


# --------------------------------------------------------------------------- model-level swaps


def _logits(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def swap_state(base_state: Any, source_state: Any, layers: Sequence[int] | str) -> Any:
    """A copy of ``base_state`` whose listed layers come from ``source_state`` (``"all"``: all)."""
    if layers == "all":
        return copy.deepcopy(source_state)
    hybrid = copy.copy(base_state)
    hybrid.layers = list(base_state.layers)
    for l in layers:
        hybrid.layers[l] = copy.deepcopy(source_state.layers[l])
    return hybrid


@torch.no_grad()
def interchange(model: torch.nn.Module, base_tokens: torch.Tensor, source_tokens: torch.Tensor,
                base_split: int, source_split: int, layers: Sequence[int] | str) -> torch.Tensor:
    """Logits of the base continuation (positions ``base_split..``) after the state swap.

    ``base_tokens [B, Lb]`` and ``source_tokens [B, Ls]`` include BOS. The prefix runs read
    positions ``0..split-1``; the swapped state then reads ``base_tokens[:, base_split:]``.
    """
    _, base_state = model(base_tokens[:, :base_split], return_state=True)
    _, source_state = model(source_tokens[:, :source_split], return_state=True)
    hybrid = swap_state(base_state, source_state, layers)
    return _logits(model(base_tokens[:, base_split:], state=hybrid))


# --------------------------------------------------------------------------- IIA


@dataclass
class IIAResult:
    layer: Any
    variable: str
    iia: float
    baseline: float
    n_pairs: int
    n_excluded: int
    positions_scored: int

    def as_record(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _expected_sets(language: Any, witness: str, suffix: str, horizon: Optional[int]) -> list[frozenset]:
    """Counterfactual allowed sets for the continuation outputs.

    The continuation's output ``i`` has read ``suffix[: i + 1]`` on top of the swapped state, so it
    should predict ``allowed_next(witness + suffix)[len(witness) + i + 1]``; scoring stops at the
    first suffix symbol that the counterfactual state does not allow (or after ``horizon`` outputs).
    """
    sets = language.allowed_next(witness + suffix)
    n = len(witness)
    out = []
    for i, ch in enumerate(suffix):
        if ch not in sets[n + i] or (horizon is not None and len(out) >= horizon):
            break
        out.append(sets[n + i + 1])
    return out


def _predicted_sets(logits: torch.Tensor, out_symbols: Sequence[str], decode: str = "sigmoid") -> list[list[frozenset]]:
    pred = metrics.allowed_from_logits(logits, decode=decode)[..., FIRST_OUTPUT_ID:]
    res = []
    for b in range(pred.shape[0]):
        rows = pred[b].nonzero().tolist()
        per = [set() for _ in range(pred.shape[1])]
        for i, k in rows:
            per[i].add(out_symbols[k])
        res.append([frozenset(x) for x in per])
    return res


def interchange_accuracy(model: torch.nn.Module, language: Any, pairs: Sequence[tuple[str, str, int, int]],
                         layers: Sequence[int] | str, variable: str, *, causal: Optional[CausalModel] = None,
                         horizon: Optional[int] = None, seed: int = 0, decode: str = "sigmoid",
                         score: str = "sets", intervene: Optional[Callable[..., torch.Tensor]] = None
                         ) -> IIAResult:
    """IIA of swapping ``layers`` against the causal model's ``variable`` counterfactual.

    ``decode`` is how the model's outputs become probabilities and allowed sets (its card's
    ``decode``; see :func:`hooks.metrics.allowed_from_logits`). ``score="sets"``: a pair is a hit iff
    the decoded allowed set equals the counterfactual's at every scored continuation position.
    ``score="close"`` (bracket languages): the task's own criterion instead, at the continuation
    positions whose counterfactual stack is non-empty: p(counterfactual close) / sum p(closes) >
    0.8 (Dyck close accuracy); pairs without such a position are excluded. It needs no set
    decoding, so it also suits next-symbol (``--loss lm``) models, whose sets are poorly defined.

    ``pairs`` are ``(base, source, base_split, source_split)``; pairs are grouped by their split
    points so each group runs as one batch. ``intervene(model, base_tokens, source_tokens,
    base_split, source_split)`` returns the continuation logits of another intervention with the
    contract of :func:`interchange` (default: the whole-``layers`` state swap), e.g. a subspace swap
    from :mod:`probe.das`.
    """
    causal = causal or causal_model_for(language)
    vocab = Vocab(language.alphabet)
    out_symbols = [END] + list(language.alphabet)
    if score not in ("sets", "close"):
        raise ValueError(f"score must be 'sets' or 'close', got {score!r}")
    closes = [c for _, c in getattr(language, "pairs", None) or []]
    if score == "close" and not closes:
        raise ValueError(f"score='close' needs a bracket language; {language.name!r} has no closing brackets")
    close_ids = [vocab.encode(c)[0] for c in closes]
    rng = np.random.default_rng(seed)
    hits = base_hits = scored_pairs = excluded = positions = 0
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (_, _, tb, ts) in enumerate(pairs):
        groups.setdefault((tb, ts), []).append(i)
    model_was_training = model.training
    model.eval()
    try:
        for (tb, ts), idx in groups.items():
            bases = [pairs[i][0] for i in idx]
            sources = [pairs[i][1] for i in idx]
            bt = torch.as_tensor(encode_batch(language, bases, vocab).tokens)
            st = torch.as_tensor(encode_batch(language, sources, vocab).tokens)
            logits = (intervene(model, bt, st, tb, ts) if intervene is not None
                      else interchange(model, bt, st, tb, ts, layers))
            predicted = _predicted_sets(logits, out_symbols, decode) if score == "sets" else None
            if score == "close":
                ratio = metrics.close_ratio(logits, close_ids, decode).numpy()  # [B, L, K] (numpy: indexed per pair below)

                def agrees(j: int, want: list[frozenset]) -> Optional[bool]:
                    ks = [(k, closes.index(c)) for k, w in enumerate(want) for c in closes if c in w]
                    return all(bool(ratio[j, k, c] > metrics.CLOSE_THRESHOLD) for k, c in ks) if ks else None
            else:
                def agrees(j: int, want: list[frozenset]) -> Optional[bool]:
                    return predicted[j][: len(want)] == want
            for j, i in enumerate(idx):
                base, source = bases[j], sources[j]
                base_prefix, suffix = base[: tb - 1], base[tb - 1:]
                w = causal.witness(base_prefix, source[: ts - 1], variable)
                if w is None:
                    excluded += 1
                    continue
                want = _expected_sets(language, w, suffix, horizon)
                if not want:  # the base's next symbol is illegal in the counterfactual state
                    excluded += 1
                    continue
                hit = agrees(j, want)
                if hit is None:  # score="close": no position with a closing bracket to predict
                    excluded += 1
                    continue
                scored_pairs += 1
                positions += len(want)
                hits += hit
                # Random-pair baseline: the counterfactual of an unrelated source prefix.
                k = int(rng.integers(len(pairs)))
                other = pairs[k][1][: pairs[k][3] - 1]
                wb = causal.witness(base_prefix, other, variable)
                if wb is not None:
                    want_b = _expected_sets(language, wb, suffix, horizon)
                    n = min(len(want_b), len(want))
                    base_hits += bool(n) and bool(agrees(j, want_b[:n]))
    finally:
        model.train(model_was_training)
    return IIAResult(layer=layers if isinstance(layers, str) else (list(layers) if len(layers) > 1 else layers[0]),
                     variable=variable, iia=hits / max(scored_pairs, 1),
                     baseline=base_hits / max(scored_pairs, 1), n_pairs=scored_pairs, n_excluded=excluded,
                     positions_scored=positions)


def sample_pairs(language: Any, n: int, min_len: int, max_len: int, *, seed: int = 0,
                 group: int = 16, equal_splits: bool = False,
                 source_window: Optional[tuple[int, int]] = None) -> list[tuple[str, str, int, int]]:
    """``n`` (base, source, base_split, source_split) pairs; split points shared within groups.

    ``equal_splits``: the source splits where the base does (a Transformer's key/value swap needs
    prefixes of equal length). ``source_window``: draw the sources from other lengths than the
    bases (pairs across lengths, hence across depths and split points). A window that holds fewer
    strings than needed is drawn with replacement."""
    rng = np.random.default_rng(seed)
    if source_window is None:
        strings = _draw(language, 2 * n, min_len, max_len, seed)
        bases, sources = strings[:n], strings[n:]
    else:
        bases = _draw(language, n, min_len, max_len, seed)
        sources = _draw(language, n, *source_window, seed + 1)
    pairs = []
    for g in range(0, n, group):
        b, s = bases[g : g + group], sources[g : g + group]
        lo = 2
        hi = min(min(len(x) for x in b), min(len(x) for x in s))
        tb = int(rng.integers(lo, hi + 1))
        ts = int(rng.integers(lo, hi + 1))
        ts = tb if equal_splits else ts
        pairs.extend((x, y, tb, ts) for x, y in zip(b, s))
    return pairs


def _draw(language: Any, n: int, min_len: int, max_len: int, seed: int) -> list[str]:
    """``n`` distinct strings of the window, or, when it holds fewer (a^n b^n has one string per
    length), ``n`` drawn with replacement from all of them."""
    count = language.count_window(min_len, max_len)
    if count is None or count >= n:
        return language.sample(n, min_len, max_len, seed=seed)
    if count == 0:
        raise ValueError(f"{language.name!r}: the length window [{min_len}, {max_len}] holds no member string")
    pool = language.sample(count, min_len, max_len, seed=seed)
    return [pool[i] for i in np.random.default_rng(seed).integers(len(pool), size=n)]


# --------------------------------------------------------------------------- subspace edits


def _positions_index(positions: Optional[Sequence[int] | int]) -> Any:
    if positions is None:
        return slice(None)
    if isinstance(positions, int):
        return [positions]
    return list(positions)


def _flat_apply(act: torch.Tensor, positions: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` to ``act[:, positions]`` flattened to ``[B, P, F]``; returns the edited copy."""
    out = act.clone()
    sel = out[:, positions]
    shape = sel.shape
    edited = fn(sel.reshape(shape[0], shape[1], -1).to(torch.float64)).reshape(shape).to(act.dtype)
    out[:, positions] = edited
    return out


def _orthonormal(directions: np.ndarray | torch.Tensor) -> torch.Tensor:
    d = torch.as_tensor(np.asarray(directions, dtype=np.float64))
    if d.ndim == 1:
        d = d[None]
    q, r = torch.linalg.qr(d.T)
    rank = int((r.diagonal().abs() > 1e-10 * r.diagonal().abs().max()).sum())
    return q[:, :rank].T  # [k, F]


@contextlib.contextmanager
def steer(model: torch.nn.Module, site: str, direction: np.ndarray | torch.Tensor, amount: float,
          positions: Optional[Sequence[int] | int] = None) -> Iterator[torch.nn.Module]:
    """Add ``amount * direction / |direction|^2`` at ``site`` (so a linear readout ``w.x`` moves by
    ``amount`` when ``direction = w``), at ``positions`` (default all)."""
    w = torch.as_tensor(np.asarray(direction, dtype=np.float64)).flatten()
    delta = amount * w / (w @ w)
    pos = _positions_index(positions)

    def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
        return _flat_apply(act, pos, lambda x: x + delta)

    with model.hooks(fwd_hooks=[(site, hook)]):
        yield model


@contextlib.contextmanager
def ablate_subspace(model: torch.nn.Module, site: str, directions: np.ndarray | torch.Tensor,
                    mean: np.ndarray | torch.Tensor, positions: Optional[Sequence[int] | int] = None
                    ) -> Iterator[torch.nn.Module]:
    """Mean-projection ablation: ``x <- x - P (x - mean)`` with ``P`` the projector on the span."""
    q = _orthonormal(directions)
    mu = torch.as_tensor(np.asarray(mean, dtype=np.float64)).flatten()
    pos = _positions_index(positions)

    def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
        return _flat_apply(act, pos, lambda x: x - ((x - mu) @ q.T) @ q)

    with model.hooks(fwd_hooks=[(site, hook)]):
        yield model


@contextlib.contextmanager
def patch_subspace(model: torch.nn.Module, site: str, directions: np.ndarray | torch.Tensor,
                   source_act: torch.Tensor, positions: Optional[Sequence[int] | int] = None
                   ) -> Iterator[torch.nn.Module]:
    """Replace the span of ``directions`` of ``site`` by the source activation's component.

    ``source_act`` has the site's shape (``[B, L, ...]``); ``directions=None``-like full patching is
    :func:`patch_full`.
    """
    q = _orthonormal(directions)
    pos = _positions_index(positions)
    src = source_act.detach()

    def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
        s = src[:, pos]
        s = s.reshape(s.shape[0], s.shape[1], -1).to(torch.float64)

        def edit(x: torch.Tensor) -> torch.Tensor:
            return x + ((s - x) @ q.T) @ q

        return _flat_apply(act, pos, edit)

    with model.hooks(fwd_hooks=[(site, hook)]):
        yield model


@contextlib.contextmanager
def patch_full(model: torch.nn.Module, site: str, source_act: torch.Tensor,
               positions: Optional[Sequence[int] | int] = None) -> Iterator[torch.nn.Module]:
    """Replace the whole activation of ``site`` at ``positions`` by the source's."""
    pos = _positions_index(positions)
    src = source_act.detach()

    def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
        out = act.clone()
        out[:, pos] = src[:, pos].to(act.dtype)
        return out

    with model.hooks(fwd_hooks=[(site, hook)]):
        yield model


def random_subspace(dim: int, rank: int, seed: int = 0) -> np.ndarray:
    """``rank`` random orthonormal directions in ``R^dim`` (the same-rank control)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, rank)))
    return q.T
