"""Interchange interventions, steering and subspace edits (probe.causal_models, probe.interchange,
probe.subspace_edits), read against the automaton.

The Dyck(8,10) construction is the exact high-level model, so its IIA must be 1.0 where the layer
matches the variable; unrelated pairs must score far below; every intervention restores the model.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import languages
from hooks import constructions
from languages.datasets import Vocab, encode_batch
from probe.causal_models import DyckCausalModel
from probe.interchange import interchange, interchange_accuracy, sample_pairs
from probe.subspace_edits import ablate_subspace, patch_full, patch_subspace, random_subspace, steer

DYCK = languages.get("dyck", K=8, h=10)


@pytest.fixture(scope="module")
def dyck():
    return constructions.dyck(8, 10)


@pytest.fixture(scope="module")
def pairs():
    return sample_pairs(DYCK, 96, 20, 60, seed=1, group=16)


def test_dyck_causal_model_tracks_the_trace():
    cm = DyckCausalModel(DYCK)
    for s in DYCK.sample(20, 10, 80, seed=0):
        tr = DYCK.trace(s)
        for t in range(1, len(s) + 1):
            depth, memory = cm.state(s[:t])
            assert depth == tr["depth"][t - 1]
            assert (memory.get(depth) if depth else None) == tr["top"][t - 1]


def test_witness_counterfactuals_by_hand():
    cm = DyckCausalModel(DYCK)
    base, source = "([]", "{<<"  # base: depth 1, memory {1:'(', 2:'['}; source: depth 3
    assert cm.witness(base, source, "all") == source
    assert cm.witness(base, source, "top") == "{"  # base depth 1, source memory
    assert cm.witness("([", source, "top") == "{<"  # base depth 2, source memory
    assert cm.witness(base, source, "depth") is None  # base memory has no block at depth 3
    assert cm.witness("(()", "[", "depth") == "("  # source depth 1, base memory block 1
    with pytest.raises(KeyError, match="unknown variable"):
        cm.witness(base, source, "colour")


@pytest.mark.parametrize("score", ["sets", "close"])
@pytest.mark.parametrize("layer,variable", [(0, "depth"), (1, "top"), ("all", "all")])
def test_construction_iia_is_one_on_its_own_variable(dyck, pairs, layer, variable, score):
    layers = "all" if layer == "all" else [layer]
    res = interchange_accuracy(dyck.model, DYCK, pairs, layers, variable, score=score)
    assert res.n_pairs > 30
    assert res.iia == 1.0
    assert res.baseline < 0.5


@pytest.mark.parametrize("score", ["sets", "close"])
def test_swapping_the_wrong_layer_does_not_implement_the_variable(dyck, pairs, score):
    res = interchange_accuracy(dyck.model, DYCK, pairs, [1], "depth", score=score)
    assert res.iia < 0.6


def test_close_scoring_is_decoding_agnostic_and_checks_its_input(dyck, pairs):
    """Softmax decoding of the construction's logits keeps the close ratio above 0.8 (its wrong closes
    sit far below the right one), so close scoring does not depend on the decoding for it."""
    sharp = interchange_accuracy(dyck.model, DYCK, pairs, "all", "all", score="close", decode="softmax")
    assert sharp.iia == 1.0 and sharp.n_pairs > 30
    with pytest.raises(ValueError, match="score"):
        interchange_accuracy(dyck.model, DYCK, pairs, "all", "all", score="argmax")
    with pytest.raises(ValueError, match="bracket"):
        interchange_accuracy(dyck.model, languages.get("flipflop"), [], "all", "all", score="close")


def test_interchange_equals_running_the_source_prefix_with_the_base_suffix(dyck):
    v = Vocab(DYCK.alphabet)
    base, source = "([{}])<>", "[[(())]]"
    bt = torch.as_tensor(encode_batch(DYCK, [base], v).tokens)
    st = torch.as_tensor(encode_batch(DYCK, [source], v).tokens)
    out = interchange(dyck.model, bt, st, 4, 3, "all")
    spliced = source[:2] + base[3:]
    ref = dyck.model(torch.as_tensor([[1] + v.encode(spliced)]))
    assert torch.allclose(out, ref[:, 3:])


def _outputs(model, tokens):
    with torch.no_grad():
        return model(tokens).clone()


def test_steering_depth_by_one_changes_the_allowed_sets_as_the_automaton_says(dyck):
    from probe.collect import collect
    from probe.linear import RidgeProbe

    site = "blocks.0.hook_ssm_state"
    col = collect(dyck.model, DYCK, {"n": 60, "min_len": 10, "max_len": 60, "seed": 0}, [site], ["depth"])
    probe = RidgeProbe().fit(col.acts[site], col.labels["depth"])
    direction = np.asarray(probe.coef_).ravel()
    v = Vocab(DYCK.alphabet)
    strings = DYCK.sample(30, 20, 60, seed=5)
    tokens = torch.as_tensor(encode_batch(DYCK, strings, v).tokens)
    before = _outputs(dyck.model, tokens)
    checked = 0
    for b, s in enumerate(strings):
        # Steer the depth state after reading s[:t] (model position t). Where s[t-1] opens a
        # bracket, layer 2 writes it at the steered depth in the same step; so steer only after a
        # closing bracket, where the counterfactual is (depth + 1, the base's memory).
        closes = [t for t in range(1, len(s) + 1) if s[t - 1] in DYCK.closes]
        t = closes[len(closes) // 2]
        depth, memory = DyckCausalModel(DYCK).state(s[:t])
        if depth + 1 > 10 or (depth + 1) not in memory:
            continue
        with steer(dyck.model, site, direction, 1.0, positions=t):
            out = _outputs(dyck.model, tokens[b : b + 1])
        witness = "".join(memory[d] for d in range(1, depth + 2))
        want = DYCK.allowed_next(witness)[-1]
        pred = torch.sigmoid(out[0, t, 2:]) > 0.5
        got = {([languages.END] + list(DYCK.alphabet))[k] for k in pred.nonzero().flatten().tolist()}
        assert got == set(want), (s[:t], witness)
        checked += 1
    assert checked > 10
    assert torch.equal(_outputs(dyck.model, tokens), before)  # restored


def test_subspace_edits_restore_the_model_and_random_control_differs(dyck):
    v = Vocab(DYCK.alphabet)
    strings = DYCK.sample(8, 30, 50, seed=2)
    tokens = torch.as_tensor(encode_batch(DYCK, strings, v).tokens)
    site = "blocks.1.hook_ssm_state"
    _, cache = dyck.model.run_with_cache(tokens, names_filter=[site])
    acts = cache[site]
    d = acts.shape[-1]
    before = _outputs(dyck.model, tokens)
    mean = acts.reshape(-1, d).mean(0).numpy()
    with ablate_subspace(dyck.model, site, np.eye(d), mean):
        ablated = _outputs(dyck.model, tokens)
    assert not torch.equal(ablated, before)
    with ablate_subspace(dyck.model, site, random_subspace(d, 1, seed=0), mean):
        control = _outputs(dyck.model, tokens)
    assert not torch.equal(control, ablated)
    # Patching the full span from the run itself is the identity; full patching likewise.
    with patch_subspace(dyck.model, site, np.eye(d), acts):
        same = _outputs(dyck.model, tokens)
    with patch_full(dyck.model, site, acts):
        same_full = _outputs(dyck.model, tokens)
    assert torch.allclose(same, before) and torch.allclose(same_full, before)
    assert torch.equal(_outputs(dyck.model, tokens), before)


def test_random_subspace_is_orthonormal():
    q = random_subspace(12, 3, seed=4)
    assert q.shape == (3, 12)
    assert np.allclose(q @ q.T, np.eye(3), atol=1e-12)


def test_mamba_state_swap_equals_a_hook_ssm_state_edit_where_both_apply():
    """One layer, and base/source prefixes that end in the same d_conv - 1 tokens (so the conv windows
    agree): swapping the recurrent state equals overwriting h at the split with the source's h."""
    from hooks.mamba import HookedMamba, MambaConfig

    torch.manual_seed(0)
    model = HookedMamba(MambaConfig(d_model=16, n_layers=1, vocab_size=9, d_state=4)).eval()
    base = torch.tensor([[1, 3, 4, 5, 6, 7, 3, 4, 5, 8, 3, 6]])
    source = torch.tensor([[1, 8, 8, 3, 7, 6, 7, 3, 4, 5]])  # ends in the same 3 tokens as base[:, :9]
    tb, ts = 9, 10
    out_state = interchange(model, base, source, tb, ts, [0])
    site = "blocks.0.mixer.hook_ssm_state"
    _, cache = model.run_with_cache(source, names_filter=[site])
    h_src = cache[site][:, ts - 1]

    def overwrite(act, hook):
        act = act.clone()
        act[:, tb - 1] = h_src
        return act

    with torch.no_grad():
        out_hook = model.run_with_hooks(base, fwd_hooks=[(site, overwrite)])
    assert torch.allclose(out_state, out_hook[:, tb:], atol=1e-5)
    assert not torch.allclose(out_hook, model(base))  # the swap changed something
