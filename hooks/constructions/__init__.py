"""The paper's SSM constructions (Sarrof et al. 2024; Liu et al. 2023 for flip-flop) as runnable, hooked models.

Each function returns a :class:`Construction`: a :class:`hooks.diagonal.HookedDiagonalSSM` with hand-set,
non-learned gates (logits over ``Vocab(language.alphabet)``, the same hook names as any diagonal SSM,
so probes, interventions and figures run on it unchanged), the language, and a ``readout(states)``
giving the allowed-next sets from the states.

* :func:`flipflop` -- previous-token channel + set/reset memory; state sizes (V, 1) = (8, 1).
* :func:`dyck` -- depth counter + h blocks of ⌈log2 K⌉ bits; state sizes (1, h·⌈log2 K⌉) = (1, 30) for (8, 10).
* :func:`counter` -- ``dyck1`` (1), ``shuffle2/4/6`` (2/4/6), ``anbn`` (2), ``anbncn`` (4), ``anbncndn`` (6).
* :func:`parity_signed` -- one signed-gate layer; state size 1.
* :func:`parity_nonnegative_witness` -- the impossibility argument for non-negative gates, observed.
* :func:`build` -- the construction for a language name (as the CLI takes it).
* :func:`flipflop_mamba`, :func:`dyck_mamba` -- the flip-flop (1 layer) and Dyck(K, h) (2 layers)
  constructions as hand-set :class:`hooks.mamba.HookedMamba` weights (:mod:`hooks.constructions.as_mamba`).
* :func:`flipflop_mamba2`, :func:`dyck_mamba2` -- the same as :class:`hooks.mamba2.HookedMamba2` weights
  (:mod:`hooks.constructions.as_mamba2`).

CLI: ``python -m hooks.constructions --language dyck --K 8 --h 10 --min-len 701 --max-len 1400 --n 200``
(``--model mamba`` / ``--model mamba2`` for the HookedMamba / HookedMamba2 realizations).
"""
from __future__ import annotations

from hooks.constructions._core import LOGIT, Construction, batch_for, encode
from hooks.constructions.as_mamba import dyck_mamba, flipflop_mamba
from hooks.constructions.as_mamba2 import dyck_mamba2, flipflop_mamba2
from hooks.constructions.counters import BLOCK_LANGUAGES, BRACKET_LANGUAGES, COUNTER_LANGUAGES, counter
from hooks.constructions.dyck import dyck
from hooks.constructions.flipflop import flipflop
from hooks.constructions.parity import LayerWitness, WitnessResult, parity_nonnegative_witness, parity_signed

LANGUAGES = ("dyck", "flipflop", "parity") + COUNTER_LANGUAGES

__all__ = [
    "Construction",
    "LOGIT",
    "LANGUAGES",
    "BRACKET_LANGUAGES",
    "BLOCK_LANGUAGES",
    "COUNTER_LANGUAGES",
    "build",
    "counter",
    "dyck",
    "flipflop",
    "parity_signed",
    "flipflop_mamba",
    "dyck_mamba",
    "flipflop_mamba2",
    "dyck_mamba2",
    "parity_nonnegative_witness",
    "LayerWitness",
    "WitnessResult",
    "batch_for",
    "encode",
]


def build(name: str, *, K: int = 8, h: int = 10, p: float = 0.8, dtype: str = "float32") -> Construction:
    """The construction for language ``name`` (one of :data:`LANGUAGES`)."""
    if name == "dyck":
        return dyck(K, h, dtype=dtype)
    if name == "flipflop":
        return flipflop(p, dtype=dtype)
    if name == "parity":
        return parity_signed(dtype=dtype)
    if name in COUNTER_LANGUAGES:
        return counter(name, dtype=dtype)
    raise ValueError(f"no construction for {name!r}; choose from {LANGUAGES}")
