"""Counter languages: Dyck-1, Shuffle-k and a^n b^n (c^n (d^n)), with gate-1 counters (Sarrof et al. 2024)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

import languages
from hooks.constructions._core import Construction, assemble, column, empty_allowed, make_config
from languages.vocab import END_ID, Vocab

BRACKET_LANGUAGES = ("dyck1", "shuffle2", "shuffle4", "shuffle6")
BLOCK_LANGUAGES = ("anbn", "anbncn", "anbncndn")
COUNTER_LANGUAGES = BRACKET_LANGUAGES + BLOCK_LANGUAGES


def _bracket_pairs(language) -> list[tuple[str, str]]:
    pairs = getattr(language, "pairs", None)
    if pairs:
        return [tuple(p) for p in pairs]
    alpha = list(language.alphabet)  # fallback: (open, close) adjacent in the alphabet
    return [(alpha[k], alpha[k + 1]) for k in range(0, len(alpha), 2)]


def counter(name: str, *, dtype: str = "float32") -> Construction:
    """One-layer counter constructions, exact at every length within the float's integer range
    (a counter is a gate-1 channel: +1/-1 per symbol). Every gate is 1 (counters) or 0/1 (reset-gadget
    flags), so the states are
    exact integers: float32 is exact while counts stay below 2**24 (strings of ~16 million symbols),
    float64 below 2**53; no length used here needs float64.

    ``dyck1``, ``shuffle2/4/6`` -- one counter per bracket pair (state size k = number of pairs; Dyck-1 is
    k = 1): gate 1, input +1 on the pair's open and -1 on its close. Readout: every open bracket allowed;
    the close of pair i iff counter i > 0; END iff every counter is 0.

    ``anbn``, ``anbncn``, ``anbncndn`` (letters l_1 .. l_m, m = 2, 3, 4) -- counters
    ``c_i = #l_i - #l_{i+1}`` (gate 1, input +1 / -1) and flags ``f_i = [l_i seen]`` for i = 2..m (the
    reset gadget: gate 0 and input 1 on l_i, else gate 1 and input 0): state size 2(m - 1). The phase is
    the largest i with f_i = 1 (1 if none). Readout in phase p: l_1 allowed iff p = 1; l_p (p >= 2)
    iff c_{p-1} > 0; l_2 in phase 1 iff c_1 > 0 (at least one a); l_{p+1} (p >= 2) iff c_{p-1} = 0;
    END iff p = m and c_{m-1} = 0 (so never for the empty prefix: n >= 1).

    Exact on every prefix of a member string (the task's inputs); a dead prefix is not flagged.
    Decoders: ``counter`` is the state itself; ``phase`` for the block languages.
    """
    if name not in COUNTER_LANGUAGES:
        raise ValueError(f"no counter construction for {name!r}; choose from {COUNTER_LANGUAGES}")
    language = languages.get(name)
    vocab = Vocab(language.alphabet)
    V = vocab.size
    if name in BRACKET_LANGUAGES:
        return _brackets(name, language, vocab, V, dtype)
    return _blocks(name, language, vocab, V, dtype)


def _brackets(name, language, vocab, V, dtype) -> Construction:
    pairs = _bracket_pairs(language)
    k = len(pairs)
    open_ids = column(vocab, [o for o, _ in pairs])
    close_ids = column(vocab, [c for _, c in pairs])
    step = torch.zeros(V, k, dtype=torch.float64)
    for j in range(k):
        step[open_ids[j], j] = 1.0
        step[close_ids[j], j] = -1.0
    cfg = make_config(language, name, [k], dtype)

    def a0(u: Tensor) -> Tensor:
        return u.new_ones(*u.shape[:2], k)

    def b0(u: Tensor) -> Tensor:
        return cfg.split(u)[0] @ step.to(u)

    def counts(states) -> Tensor:
        return torch.round(states[0]).long()

    def readout(states) -> Tensor:
        c = counts(states)
        out = empty_allowed(states[0], V)
        out[..., open_ids] = True
        out[..., close_ids] = c > 0
        out[..., END_ID] = (c == 0).all(-1)
        return out

    model = assemble(cfg, [(a0, b0)], readout)
    return Construction(name, language, model, readout, {"counter": counts},
                        f"{name}: {k} counter(s), gate 1")


def _blocks(name, language, vocab, V, dtype) -> Construction:
    letters: Sequence[str] = list(language.alphabet)
    m = len(letters)
    ids = column(vocab, letters)
    step = torch.zeros(V, m - 1, dtype=torch.float64)  # counters c_1..c_{m-1}
    seen = torch.zeros(V, m - 1, dtype=torch.float64)  # flags f_2..f_m
    for i in range(m - 1):
        step[ids[i], i] = 1.0
        step[ids[i + 1], i] = -1.0
        seen[ids[i + 1], i] = 1.0
    cfg = make_config(language, name, [2 * (m - 1)], dtype)

    def a0(u: Tensor) -> Tensor:
        x = cfg.split(u)[0]
        return torch.cat([u.new_ones(*u.shape[:2], m - 1), 1.0 - x @ seen.to(u)], dim=-1)

    def b0(u: Tensor) -> Tensor:
        x = cfg.split(u)[0]
        return torch.cat([x @ step.to(u), x @ seen.to(u)], dim=-1)

    def counts(states) -> Tensor:
        return torch.round(states[0][..., : m - 1]).long()

    def phase(states) -> Tensor:  # 1..m
        flags = states[0][..., m - 1 :] > 0.5  # f_2..f_m
        idx = torch.arange(2, m + 1, device=flags.device)
        return torch.where(flags, idx, torch.ones_like(idx)).max(-1).values

    def readout(states) -> Tensor:
        c, p = counts(states), phase(states)
        out = empty_allowed(states[0], V)
        out[..., ids[0]] = p == 1
        out[..., ids[1]] |= (p == 1) & (c[..., 0] > 0)
        for q in range(2, m + 1):
            c_prev = c[..., q - 2]  # c_{q-1}
            in_q = p == q
            out[..., ids[q - 1]] |= in_q & (c_prev > 0)
            if q < m:
                out[..., ids[q]] |= in_q & (c_prev == 0)
            else:
                out[..., END_ID] = in_q & (c_prev == 0)
        return out

    model = assemble(cfg, [(a0, b0)], readout)
    return Construction(name, language, model, readout, {"counter": counts, "phase": phase},
                        f"{name}: {m - 1} counters + {m - 1} phase flags ({2 * (m - 1)})")
