"""The counter languages' causal model (Dyck-1 depth, a^n b^n's #a - #b) against the automaton, and DAS
finding the counter in the counter construction (ground truth: a^n b^n's state is [c_1, f_2], the
counter in channel 0 and the phase flag in channel 1)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import languages
from hooks import constructions
from probe.causal_models import CounterCausalModel, causal_model_for
from probe.das import Site, das_iia
from probe.das_search import DASConfig, fit_das, prepare, probe_subspace
from probe.interchange import sample_pairs


def _prefixes(language, n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for s in language.sample(n, 2, 40, seed=seed) if language.name == "dyck1" else [
            "a" * k + "b" * k for k in range(1, 21)]:
        out.append(s[: int(rng.integers(1, len(s) + 1))])
    return out


def _expected_next(name, counter, after_b):
    """The counter automaton's allowed next symbols, written out by hand."""
    if name == "dyck1":
        return {"("} | ({")"} if counter > 0 else {languages.END})
    if after_b:
        return {"b"} if counter > 0 else {languages.END}
    return {"a", "b"} if counter > 0 else {"a"}


@pytest.mark.parametrize("name", ["dyck1", "anbn"])
def test_counter_counterfactual_is_the_base_phase_with_the_source_counter(name):
    lang = languages.get(name)
    cm = causal_model_for(lang)
    assert isinstance(cm, CounterCausalModel)
    var = cm.variables[0]
    up, down = ("(", ")") if name == "dyck1" else ("a", "b")
    checked = 0
    for base, source in itertools.product(_prefixes(lang, 12, 1), _prefixes(lang, 12, 2)):
        w = cm.witness(base, source, var)
        c = source.count(up) - source.count(down)
        if w is None:  # only a^n b^n: a non-empty a-phase prefix cannot have counter 0
            assert name == "anbn" and c == 0 and down not in base
            continue
        assert cm.value(w, var) == c
        assert (down in w) == (name == "anbn" and down in base)  # the base's phase
        assert lang.allowed_next(w)[-1] == _expected_next(name, c, down in base)
        checked += 1
    assert checked > 100


def test_das_rank1_finds_the_anbn_counter():
    c = constructions.counter("anbn")
    L = c.language
    train = sample_pairs(L, 96, 4, 60, seed=1)  # 29 strings in the window: drawn with replacement
    test = sample_pairs(L, 48, 4, 60, seed=3)
    cfg = DASConfig(steps=30, horizon=40)
    site = Site("state", (0,))
    data = prepare(c.model, L, train, "counter", site, cfg)
    assert data.dim == 2
    basis, _ = fit_das(c.model, L, data, 1, cfg, inits=[probe_subspace(data, L, "counter", 1, pad=True)])
    res = das_iia(c.model, L, test, "counter", site, basis)
    assert res.n_pairs >= 30 and res.iia >= 0.99 and res.baseline < 0.8
    assert abs(float(basis[0, 0])) >= 0.99  # |cos| with the counter channel
    # The phase flag's direction moves the wrong variable: its swap leaves the base's counter.
    flag = das_iia(c.model, L, test, "counter", site, torch.tensor([[0.0], [1.0]], dtype=torch.float64))
    assert flag.iia <= res.baseline + 0.1
