"""Interchange interventions (Geiger et al. 2021) on recurrent models, scored against the automaton.

A recurrent model (HookedMamba, a construction) carries everything it knows about a prefix in its
per-layer state. Run a *base* prefix and a *source* prefix, put the source's state of chosen layers
into the base's state, and continue on the base's suffix: :func:`interchange`. The high-level causal
model (:mod:`probe.causal_models`) gives the counterfactual as a *witness* string whose automaton
state is the counterfactual state, and the expected allowed-next sets are
``language.allowed_next(witness + base_suffix)``. A pair whose counterfactual is undefined, or whose
base suffix starts with a symbol the counterfactual state forbids, is excluded and counted. Scoring
runs along the base suffix while it stays a viable continuation of the witness.

Interchange intervention accuracy (IIA) is the fraction of pairs whose predicted allowed sets equal
the counterfactual ones at every scored position. The random-pair baseline scores the same
intervened outputs against the counterfactual of an unrelated source: how often they agree by
chance.

Positions: a split point ``t`` (1 <= t <= len(s)) means the prefix run reads model positions
``0..t-1`` (BOS + ``s[:t-1]``), the state is swapped there, and the continuation reads positions
``t..`` whose outputs predict ``allowed_next(s)[t:]``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from hooks import metrics
from languages.datasets import Vocab, encode_batch
from languages.vocab import END, FIRST_OUTPUT_ID
from probe.causal_models import CausalModel, causal_model_for


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
