"""automata-lens ``languages``: the formal-language suite with per-step automaton states (no torch).

>>> import languages
>>> lang = languages.get("dyck", K=8, h=10)
>>> s = lang.sample(1, 10, 10, seed=0)[0]
>>> lang.accepts(s), len(lang.allowed_next(s)), sorted(lang.trace(s))
(True, 11, ['depth', 'stack', 'top'])

Public API
* :func:`names` -- the 29 language names; :func:`get` ``(name, **params)`` -> :class:`Language`.
* :data:`END` = ``"$"`` -- the end-of-string marker in allowed-next sets.
* :class:`Language` -- ``name``, ``params``, ``alphabet``, ``kind``, ``membership_target``,
  ``default_bins``, ``default_sizes``, ``state_variables``; ``sample(n, min_len, max_len, seed)``,
  ``accepts(s)``, ``allowed_next(s)``, ``allowed_matrix(s)``, ``prefix_labels(s)``,
  ``trace(s, initial=False)``, ``count(length)``, ``count_window(lo, hi)``, ``is_star_free()``.
* :class:`DFA` ``(states, alphabet, transitions, start, accepting)`` -- a user-defined regular
  language with everything above plus ``minimize()``, ``transition_monoid()``, ``run(s)``.
* :mod:`languages.vocab` -- the token ids (``PAD_ID``, ``BOS_ID``, ``END_ID``, ``FIRST_SYMBOL_ID``,
  ``FIRST_OUTPUT_ID``), ``Vocab`` and its ``inputs(strings)``, the one encoder of model inputs.
* :mod:`languages.datasets` -- ``Vocab``, ``encode_batch``, ``Batch``, ``make_splits`` (train, test bins
  and a ``dev`` split drawn last from the training window, disjoint from all of them).
* :mod:`languages.paper` -- the paper's windows (every suite language's ``default_bins``) and sizes.
* Options: ``get("tomita3", targets="paper")``, ``get("zot", targets="paper")`` (the original
  repository's targets, see :mod:`languages.regular`; :data:`TARGETS`, :data:`WITH_PAPER_TARGETS`); ``get("shuffle4", sampler="interleave")``
  (general interleavings; the default ``"nested"`` draws the paper's properly nested strings).

The paper's suite (README, "The languages"; definitions and judgment calls in the docstrings of :mod:`languages.regular`,
:mod:`languages.counter`, :mod:`languages.flipflop`, :mod:`languages.dyck`):

* star-free regular: tomita1, tomita2, tomita4, tomita7, d2, d3, d4, d12, abcde, ab_d_bc, zot, and
  flipflop (param ``p``, default 0.8) and dyck (params ``K``, ``h``, default 8, 10) -- bounded-depth
  Dyck and flip-flop are star-free regular languages;
* non-star-free regular: parity, aa_star, aaaa_star, abab_star, tomita3, tomita5, tomita6;
* counter (non-regular): dyck1, shuffle2, shuffle4, shuffle6, boolean3, boolean5, anbn, anbncn,
  anbncndn.

For the suite's regular languages ``kind`` comes from ``is_star_free()`` (computed from each minimal
DFA's transition monoid); the star-freeness of flipflop is computed the same way, that of Dyck(K, h)
is proved in :mod:`languages.dyck` and checked on small (K, h) by the tests.

Trace variables (``trace(s, initial=True)``: ``len(s) + 1`` entries, entry 0 = start):
regular languages ``state`` (minimal-DFA state id: canonical breadth-first numbering from the start
state = 0 in alphabet order, dead state last); D_n also ``depth``, ``top``; flipflop also ``stored``,
``instruction``; dyck ``depth``, ``top``, ``stack``; counter languages ``counter`` (tuple of ints) and
``phase`` (int; -1 once the prefix can no longer be completed; dyck1 also ``depth``).
"""
from __future__ import annotations

from typing import Any, Callable

from . import datasets
from .base import END, Language
from .counter import COUNTER_FACTORIES
from .dfa import DFA, explore
from .dyck import Dyck
from .flipflop import FlipFlop
from .regular import REGULAR_FACTORIES, TARGETS, WITH_PAPER_TARGETS

__all__ = ["END", "Language", "DFA", "names", "get", "explore", "datasets", "REGULAR", "COUNTER", "TARGETS",
           "WITH_PAPER_TARGETS"]

_ORDER = [
    "tomita1", "tomita2", "tomita3", "tomita4", "tomita5", "tomita6", "tomita7",
    "d2", "d3", "d4", "d12", "abcde", "ab_d_bc", "zot",
    "parity", "aa_star", "aaaa_star", "abab_star",
    "dyck1", "shuffle2", "shuffle4", "shuffle6", "boolean3", "boolean5", "anbn", "anbncn", "anbncndn",
    "flipflop", "dyck",
]

_FACTORIES: dict[str, Callable[..., Language]] = {
    **REGULAR_FACTORIES,
    **COUNTER_FACTORIES,
    "flipflop": lambda p=0.8: FlipFlop(p),
    "dyck": lambda K=8, h=10: Dyck(K, h),
}
assert sorted(_FACTORIES) == sorted(_ORDER)

REGULAR = tuple(REGULAR_FACTORIES) + ("flipflop", "dyck")
COUNTER = tuple(COUNTER_FACTORIES)

_CACHE: dict[tuple, Language] = {}


def names() -> list[str]:
    """The 29 language names, in the suite's order (regular, counter, flip-flop, Dyck(K, h))."""
    return list(_ORDER)


def get(name: str, **params: Any) -> Language:
    """The language ``name`` (see :func:`names`) with its parameters (flipflop: ``p``; dyck: ``K``,
    ``h``; boolean3/boolean5: ``p``, the operator probability of the sampler; tomita3/zot: ``targets``;
    shuffle2/4/6: ``sampler``). Instances are cached
    and immutable in use."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown language {name!r}; known: {', '.join(_ORDER)}")
    for k, v in params.items():
        if isinstance(v, str):  # a named option (targets=, sampler=): the language checks its value
            continue
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x:
                raise ValueError(f"{name}: parameter {k} must be a number, got {v!r}")
    key = (name, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items())))
    lang = _CACHE.get(key)
    if lang is None:
        try:
            lang = _FACTORIES[name](**params)
        except TypeError as e:
            raise ValueError(f"bad parameters {params!r} for {name!r}: {e}") from None
        _CACHE[key] = lang
    return lang
