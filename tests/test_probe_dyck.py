"""The issue's check on the Dyck(8, 10) construction: depth is exact from layer 1's state, the top
bracket is exact from layer 2's state once the depth is known; a random-init model is far below.

Layer 2 of the construction keeps one memory block per depth and never clears a block when the depth
drops, so the top bracket is block[depth] -- a product of the depth and the block contents, which no
single linear map of the layer-2 state reads out. It is read with one linear probe per depth
(:func:`probe.probe_given`), i.e. "linear once the depth from layer 1 is known".
"""
from __future__ import annotations

import pytest

constructions = pytest.importorskip("hooks.constructions")

from probe import collect, probe_given, probe_grid, random_init_like  # noqa: E402

SITES = ["blocks.0.hook_ssm_state", "blocks.1.hook_ssm_state"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")
TRAIN = {"n": 200, "min_len": 20, "max_len": 200, "seed": 0}
TEST = {"n": 40, "min_len": 20, "max_len": 200, "seed": 1}
LONG = {"n": 6, "min_len": 701, "max_len": 1400, "seed": 2}


@pytest.fixture(scope="module")
def dyck_collections():
    con = constructions.dyck(8, 10)
    lang = con.language
    rnd = random_init_like(con.model, seed=1)
    out = {}
    for name, model in [("construction", con.model), ("random", rnd)]:
        out[name] = tuple(collect(model, lang, spec, SITES, ["depth", "top"], positions=k, seed=i)
                          for i, (spec, k) in enumerate([(TRAIN, 10000), (TEST, 2000), (LONG, 2000)]))
    return out


def test_depth_is_exact_from_layer_one_and_generalizes_to_longer_strings(dyck_collections):
    tr, te, long = dyck_collections["construction"]
    rtr, rte, _ = dyck_collections["random"]
    assert not set(tr.strings) & set(te.strings)
    (rec,) = probe_grid(tr, te, ["depth"], ["blocks.0.hook_ssm_state"], ood={"701-1400": long},
                        random_init=(rtr, rte), baselines=("majority", "random_init", "control"))
    assert rec.accuracy_rounded == 1.0 and rec.score > 0.9999
    assert rec.ood["701-1400"].accuracy_rounded == 1.0
    assert rec.selectivity > 0.9  # the layer-1 state does not encode the current token
    assert rec.random_init < 0.5  # R^2 of the same probe on the random-init model


def test_top_bracket_is_exact_from_layer_two_given_depth(dyck_collections):
    tr, te, long = dyck_collections["construction"]
    res = probe_given(tr, te, "top", "blocks.1.hook_ssm_state", given="depth")
    assert res["score"] == 1.0
    assert probe_given(tr, long, "top", "blocks.1.hook_ssm_state", given="depth")["score"] == 1.0
    rtr, rte, _ = dyck_collections["random"]
    rnd = probe_given(rtr, rte, "top", "blocks.1.hook_ssm_state", given="depth")
    assert rnd["score"] < 0.9


def test_random_init_hooked_mamba_is_far_below():
    """The same probes on a random-init 2-layer HookedMamba (d_model 32, d_state 16): slow channels
    integrate the input, so depth is partly readable (R^2 ~ 0.85) but not exactly."""
    mamba = pytest.importorskip("hooks.mamba")
    import torch

    con = constructions.dyck(8, 10)
    lang = con.language
    torch.manual_seed(1)
    model = mamba.HookedMamba(mamba.MambaConfig(d_model=32, n_layers=2, vocab_size=con.vocab.size)).eval()
    sites = ["blocks.0.mixer.hook_ssm_state", "blocks.1.mixer.hook_ssm_state"]
    tr = collect(model, lang, TRAIN, sites, ["depth", "top"], positions=4000, seed=0)
    te = collect(model, lang, TEST, sites, ["depth", "top"], positions=2000, seed=1)
    (rec,) = probe_grid(tr, te, ["depth"], sites[:1], baselines=())
    assert rec.accuracy_rounded < 0.7 and rec.score < 0.95
    top = probe_given(tr, te, "top", sites[1], given="depth", probe_params={"Cs": (1.0,)})
    assert top["score"] < 0.8
