"""probe.patching: layer x position patching agrees with transformer_lens.patching, and reads the
Dyck construction's known information flow."""
from __future__ import annotations

import pytest
import torch

import languages
from hooks import constructions
from languages.datasets import Vocab, encode_batch
from probe.patching import (activation_patching, activation_patching_loop, close_logit_diff, dyck_corruptions,
                            dyck_patching)

DYCK = languages.get("dyck", K=8, h=10)


def test_corruptions_change_only_the_top_bracket():
    clean, corr, cc, xc = dyck_corruptions(DYCK, 12, 10, 20, seed=3)
    for a, b, c, x in zip(clean, corr, cc, xc):
        assert len(a) == len(b) and sum(u != v for u, v in zip(a, b)) == 1
        assert DYCK.allowed_next(a)[-1] & set(DYCK.closes) == {c}
        assert DYCK.allowed_next(b)[-1] & set(DYCK.closes) == {x} and c != x


def test_agrees_with_transformer_lens_patching():
    from transformer_lens.patching import get_act_patch_resid_pre

    from hooks.transformer import TransformerConfig, build_transformer

    m = build_transformer(TransformerConfig(d_model=16, n_layers=2, n_heads=2, vocab_size=Vocab(DYCK.alphabet).size,
                                            n_ctx=64, seed=0)).eval()
    clean, corr, cc, xc = dyck_corruptions(DYCK, 6, 10, 14, seed=1)
    vocab = Vocab(DYCK.alphabet)
    ct = torch.as_tensor(encode_batch(DYCK, clean, vocab).tokens)[:, : len(clean[0]) + 1]
    xt = torch.as_tensor(encode_batch(DYCK, corr, vocab).tokens)[:, : len(clean[0]) + 1]
    metric = close_logit_diff(DYCK, cc, xc)
    ours = activation_patching(m, ct, xt, metric, "blocks.{l}.hook_resid_pre")
    _, cache = m.bridge.run_with_cache(ct)
    theirs = get_act_patch_resid_pre(m.bridge, xt, cache, metric)
    assert ours.shape == (2, ct.shape[1])
    torch.testing.assert_close(ours, theirs.double(), atol=1e-5, rtol=1e-4)
    assert float(ours.abs().max()) > 0  # the patches moved the metric somewhere


def test_construction_flow_is_where_the_construction_puts_it():
    # dyck_mamba: the top bracket's type enters at the position where it was opened and is held in
    # layer 2's state from there on; patching layer 2's state at the last position restores the clean
    # run fully, patching layer 1's state (the depth counter) anywhere restores nothing.
    c = constructions.dyck_mamba(8, 10)
    r = dyck_patching(c.model, DYCK, n=8, min_len=12, max_len=16, site="blocks.{l}.mixer.hook_ssm_state", seed=2)
    s = r["scores"]
    assert s.shape == (2, r["length"] + 1)
    assert float(s[1, -1]) == pytest.approx(1.0, abs=1e-3)
    assert float(s[0].abs().max()) < 1e-3
    resid = dyck_patching(c.model, DYCK, n=8, min_len=12, max_len=16, seed=2)["scores"]
    # The embedding patched at a pair's changed position restores that pair and nothing else moves
    # (identical tokens elsewhere): the metric is a batch mean, so layer 1's row sums to exactly 1.
    assert float(resid[0].sum()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("which,site", [("dyck_mamba", "blocks.{l}.mixer.hook_ssm_state"),
                                        ("dyck_mamba", "blocks.{l}.hook_resid_pre"),
                                        ("dyck", "blocks.{l}.hook_ssm_state"),
                                        ("transformer", "blocks.{l}.hook_resid_pre")])
def test_vectorised_patching_equals_one_patch_a_pass(which, site):
    # The tiled batch (every position patched in its own copy of the corrupted batch, several per
    # forward pass) gives the same [layer, position] scores as the one-patch-a-pass loop, also when
    # the positions are split over several passes (max_batch).
    from hooks.transformer import TransformerConfig, build_transformer

    if which == "transformer":
        m = build_transformer(TransformerConfig(d_model=16, n_layers=2, n_heads=2,
                                                vocab_size=Vocab(DYCK.alphabet).size, n_ctx=64, seed=0)).eval()
    else:
        m = getattr(constructions, which)(8, 10).model
    clean, corr, cc, xc = dyck_corruptions(DYCK, 5, 10, 14, seed=4)
    vocab = Vocab(DYCK.alphabet)
    ct = torch.as_tensor(encode_batch(DYCK, clean, vocab).tokens)[:, : len(clean[0]) + 1]
    xt = torch.as_tensor(encode_batch(DYCK, corr, vocab).tokens)[:, : len(clean[0]) + 1]
    metric = close_logit_diff(DYCK, cc, xc)
    ref = activation_patching_loop(m, ct, xt, metric, site)
    assert float(ref.abs().max()) > 0
    for max_batch in (512, 12):
        torch.testing.assert_close(activation_patching(m, ct, xt, metric, site, max_batch=max_batch), ref,
                                   atol=1e-5, rtol=1e-4)
