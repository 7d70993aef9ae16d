"""hooks.transformer: tiny TransformerLens 4 models (config, determinism, checkpoints, hooks,
positional variants, gradients), and their KV cache (hooks.kv_cache: continuation and swap)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from hooks.kv_cache import KVCache, capture_kv, run_with_kv
from hooks.transformer import (
    EXTRA_HOOK_ALIASES,
    POS_ENCODINGS,
    HookedTransformerLM,
    TransformerConfig,
    build_transformer,
    hook_names,
    sinusoidal_table,
)

V = 7


def small_cfg(**kw) -> TransformerConfig:
    base = dict(d_model=16, n_layers=2, n_heads=4, vocab_size=V, n_ctx=64, seed=0)
    base.update(kw)
    return TransformerConfig(**base)


@pytest.fixture(scope="module", params=POS_ENCODINGS)
def model(request) -> HookedTransformerLM:
    return build_transformer(small_cfg(pos_encoding=request.param)).eval()


def tokens(b: int, l: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (b, l), generator=g)


# ---- config ----------------------------------------------------------------------------------


def test_config_defaults_and_round_trip():
    cfg = TransformerConfig(d_model=32, n_layers=2, n_heads=4, vocab_size=11)
    assert cfg.d_mlp == 128 and cfg.n_ctx == 2048 and cfg.pos_encoding == "learned"
    assert cfg.act_fn == "gelu" and cfg.normalization == "LN" and cfg.d_head == 8
    d = cfg.to_dict()
    assert TransformerConfig.from_dict(d) == cfg
    import json

    assert TransformerConfig.from_dict(json.loads(json.dumps(d))) == cfg


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(d_model=10, n_heads=4), "not divisible by n_heads"),
        (dict(n_layers=0), "n_layers must be >= 1"),
        (dict(pos_encoding="rotary"), "pos_encoding"),
        (dict(d_model=9, n_heads=3, pos_encoding="sinusoidal"), "even d_model"),
        (dict(act_fn="tanh"), "act_fn"),
        (dict(normalization="batch"), "normalization"),
        (dict(n_ctx=2.0), "n_ctx must be an int"),
        (dict(seed=-1), "seed"),
    ],
)
def test_config_rejects_impossible_parameters(bad, message):
    with pytest.raises(ValueError, match=message):
        small_cfg(**bad)


def test_from_dict_rejects_unknown_and_missing_fields():
    with pytest.raises(ValueError, match="unknown TransformerConfig field"):
        TransformerConfig.from_dict({**small_cfg().to_dict(), "d_state": 4})
    d = small_cfg().to_dict()
    del d["vocab_size"]
    with pytest.raises(ValueError, match="missing required"):
        TransformerConfig.from_dict(d)


# ---- forward, causality, determinism -----------------------------------------------------------


def test_forward_shape_and_causality(model):
    x = tokens(3, 12)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (3, 12, V) and logits.dtype == torch.float32
        for t in (0, 5, 10):
            y = x.clone()
            y[:, t + 1] = (y[:, t + 1] + 1) % V
            changed = model(y)
            torch.testing.assert_close(changed[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-6)
            assert (changed[:, t + 1] - logits[:, t + 1]).abs().max() > 1e-4


def test_bad_tokens_give_clear_errors(model):
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="token ids"):
        model(torch.tensor([[0, V]]))
    with pytest.raises(ValueError, match="n_ctx"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_deterministic_for_a_seed_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    for pos in POS_ENCODINGS:
        a = build_transformer(small_cfg(pos_encoding=pos)).state_dict()
        b = build_transformer(small_cfg(pos_encoding=pos)).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(torch.rand(3), expected_draw)  # building models drew nothing from it
    c = build_transformer(small_cfg(seed=1)).state_dict()
    assert not torch.equal(a["blocks.0.attn.q.weight"], c["blocks.0.attn.q.weight"])


def test_learned_is_boot_native_and_variants_share_weights():
    from transformer_lens import TransformerBridge

    learned = build_transformer(small_cfg(pos_encoding="learned"))
    native = TransformerBridge.boot_native(small_cfg().bridge_config())
    ref = native.state_dict()
    got = learned.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    for pos in ("sinusoidal", "none"):
        other = build_transformer(small_cfg(pos_encoding=pos)).state_dict()
        assert set(other) == set(got) - {"pos_embed.weight"}
        assert all(torch.equal(other[k], got[k]) for k in other)


# ---- positional variants -----------------------------------------------------------------------


def test_no_positional_encoding_has_no_positional_parameters_or_signal():
    m = build_transformer(small_cfg(pos_encoding="none")).eval()
    names = [n for n, _ in m.named_parameters()] + list(m.state_dict())
    assert not any("pos" in n for n in names)
    assert m.bridge.original_model.pos is None
    assert not hasattr(m.bridge, "pos_embed") or m.bridge._modules.get("pos_embed") is None
    assert "hook_pos_embed" not in m.hook_dict
    same = torch.full((2, 30), 4)
    with torch.no_grad():
        logits, cache = m.run_with_cache(same, names_filter=["hook_embed", "blocks.0.hook_resid_pre"])
    # The residual stream starts as the token embedding alone...
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], cache["hook_embed"], rtol=0, atol=0)
    # ...so on a constant string the causal average of equal values is the same at every position.
    torch.testing.assert_close(logits, logits[:, :1].expand_as(logits), rtol=0, atol=1e-5)
    # Positional variants do tell the positions apart.
    for pos in ("learned", "sinusoidal"):
        with torch.no_grad():
            other = build_transformer(small_cfg(pos_encoding=pos))(same)
        assert (other - other[:, :1]).abs().max() > 1e-2


def test_sinusoidal_table_is_fixed_and_not_a_parameter():
    m = build_transformer(small_cfg(pos_encoding="sinusoidal"))
    assert not any("pos" in n for n, _ in m.named_parameters())
    assert "pos_embed.weight" not in m.state_dict()
    table = m.bridge.pos_embed.W_pos
    assert table.shape == (64, 16) and not table.requires_grad
    d = 16
    for t, i in [(0, 0), (3, 1), (17, 5), (63, 7)]:
        angle = t / 10000 ** (2 * i / d)
        assert table[t, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert table[t, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    torch.testing.assert_close(sinusoidal_table(64, 16), table)
    x = tokens(1, 5)
    with torch.no_grad():
        _, cache = m.run_with_cache(x, names_filter=["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre"])
    torch.testing.assert_close(cache["hook_pos_embed"][0], table[:5])
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], cache["hook_embed"] + cache["hook_pos_embed"])


# ---- checkpoints -------------------------------------------------------------------------------


def test_state_dict_safetensors_round_trip(model, tmp_path):
    sd = model.state_dict()
    path = tmp_path / "m.safetensors"
    save_file(sd, str(path))  # refuses shared/aliased tensors: there must be none
    fresh = build_transformer(TransformerConfig.from_dict({**model.cfg.to_dict(), "seed": 7}))
    x = tokens(2, 9)
    with torch.no_grad():
        assert not torch.equal(fresh(x), model(x))
        fresh.load_state_dict(load_file(str(path)))
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    reloaded = fresh.state_dict()
    assert reloaded.keys() == sd.keys() and all(torch.equal(reloaded[k], sd[k]) for k in sd)


def test_mismatched_checkpoint_gives_clear_error():
    small = build_transformer(small_cfg())
    wide = build_transformer(small_cfg(d_model=32))
    with pytest.raises(ValueError, match=r"embed.weight.*shape \(7, 32\).*\(7, 16\)"):
        small.load_state_dict(wide.state_dict())
    deeper = build_transformer(small_cfg(n_layers=3))
    with pytest.raises(ValueError, match=r"unexpected \[.*blocks\.2\."):
        small.load_state_dict(deeper.state_dict())
    nope = build_transformer(small_cfg(pos_encoding="none"))
    with pytest.raises(ValueError, match=r"unexpected \['pos_embed.weight'\]"):
        nope.load_state_dict(small.state_dict())
    with pytest.raises(ValueError, match=r"missing \['pos_embed.weight'\]"):
        small.load_state_dict(nope.state_dict())


def test_named_parameters_match_state_dict(model):
    named = dict(model.named_parameters())
    sd = model.state_dict()
    assert set(named) <= set(sd)
    assert len(named) == len(list(torch.nn.Module.parameters(model)))
    assert all(named[k].data_ptr() == sd[k].data_ptr() for k in named)


# ---- hooks -------------------------------------------------------------------------------------

TABLE = [
    "hook_embed",
    "hook_norm_final",
    "hook_logits",
    "hook_unembed",
    *[
        f"blocks.{{l}}.{name}"
        for name in (
            "hook_resid_pre",
            "hook_resid_mid",
            "hook_resid_post",
            "hook_attn_out",
            "hook_mlp_out",
            "attn.hook_q",
            "attn.hook_k",
            "attn.hook_v",
            "attn.hook_z",
            "attn.hook_pattern",
            "attn.hook_attn_scores",
            "mlp.hook_pre",
            "mlp.hook_post",
        )
    ],
]


def test_documented_hook_names_exist(model):
    names = set(hook_names(model))
    for l in range(model.cfg.n_layers):
        for n in TABLE:
            assert n.format(l=l) in names, n
    assert ("hook_pos_embed" in names) == (model.cfg.pos_encoding != "none")
    assert set(EXTRA_HOOK_ALIASES) <= names


def test_run_with_cache_resid_post_every_layer(model):
    x = tokens(3, 11)
    L = model.cfg.n_layers
    wanted = [f"blocks.{l}.hook_resid_post" for l in range(L)]
    with torch.no_grad():
        logits, cache = model.run_with_cache(x, names_filter=wanted + ["hook_logits", "hook_norm_final"])
        _, cache2 = model.run_with_cache(x, names_filter=lambda n: n.endswith("hook_resid_post"))
        _, cache3 = model.run_with_cache(x, names_filter="blocks.1.hook_resid_post")
    for name in wanted:
        assert cache[name].shape == (3, 11, model.cfg.d_model)
        torch.testing.assert_close(cache2[name], cache[name])
    assert set(cache2.keys()) == set(wanted)
    torch.testing.assert_close(cache3["blocks.1.hook_resid_post"], cache["blocks.1.hook_resid_post"])
    torch.testing.assert_close(cache["hook_logits"], logits)
    assert cache["hook_norm_final"].shape == (3, 11, model.cfg.d_model)
    with torch.no_grad():
        _, pre = model.run_with_cache(x, names_filter="blocks.1.hook_resid_pre")
    torch.testing.assert_close(pre["blocks.1.hook_resid_pre"], cache["blocks.0.hook_resid_post"])


def test_hooks_edit_and_restore(model):
    x = tokens(2, 8)
    zero = lambda t, hook: torch.zeros_like(t)  # noqa: E731
    with torch.no_grad():
        before = model(x)
        ablated = model.run_with_hooks(x, fwd_hooks=[("blocks.1.hook_attn_out", zero)])
        with model.hooks(fwd_hooks=[("blocks.1.hook_attn_out", zero)]):
            inside = model(x)
        after = model(x)
    torch.testing.assert_close(inside, ablated)
    assert (ablated - before).abs().max() > 1e-4
    torch.testing.assert_close(after, before, rtol=0, atol=0)


# ---- key/value cache: continuation and swap ------------------------------------------------------


def test_kv_continuation_equals_full_run(model):
    x = tokens(3, 20, seed=1)
    with torch.no_grad():
        full = model(x)
        prefix_logits, kv = capture_kv(model, x[:, :8])
        assert kv.length == 8 and kv.batch_size == 3 and len(kv.layers) == model.cfg.n_layers
        assert kv.layers[0].k.shape == (3, 8, model.cfg.n_heads, model.cfg.d_head)
        torch.testing.assert_close(prefix_logits, full[:, :8], rtol=0, atol=1e-5)
        cont = run_with_kv(model, x[:, 8:], kv)
        torch.testing.assert_close(cont, full[:, 8:], rtol=0, atol=1e-5)
        # Chained through the forward's state API, one chunk at a time.
        out1, s1 = model(x[:, :5], return_state=True)
        out2, s2 = model(x[:, 5:13], state=s1, return_state=True)
        out3 = model(x[:, 13:], state=s2)
        assert s2.length == 13
        torch.testing.assert_close(torch.cat([out1, out2, out3], 1), full, rtol=0, atol=1e-5)


def test_kv_swap_is_the_interchange_intervention(model):
    base, source = tokens(2, 14, seed=2), tokens(2, 14, seed=3)
    P = 6
    with torch.no_grad():
        _, kv_base = capture_kv(model, base[:, :P])
        _, kv_source = capture_kv(model, source[:, :P])
        # Swapping every layer = running the source prefix followed by the base suffix.
        swapped = run_with_kv(model, base[:, P:], kv_source)
        expected = model(torch.cat([source[:, :P], base[:, P:]], 1))[:, P:]
        torch.testing.assert_close(swapped, expected, rtol=0, atol=1e-5)
        # One layer swapped: a real intervention, different from both runs.
        mixed = kv_base.replace_layers(kv_source, [1])
        assert mixed.layers[0] is kv_base.layers[0] and mixed.layers[1] is kv_source.layers[1]
        one = run_with_kv(model, base[:, P:], mixed)
        own = run_with_kv(model, base[:, P:], kv_base)
        assert (one - own).abs().max() > 1e-5 and (one - swapped).abs().max() > 1e-5
        # The model is unchanged afterwards.
        torch.testing.assert_close(own, model(base)[:, P:], rtol=0, atol=1e-5)
    _, short = capture_kv(model, source[:, : P - 1])
    with pytest.raises(ValueError, match="prefix lengths"):
        kv_base.replace_layers(short, [0])
    with pytest.raises(ValueError, match="KV cache"):
        run_with_kv(model, base[:1, P:], kv_base)  # batch size differs
    with pytest.raises(ValueError, match="n_ctx"):
        run_with_kv(model, torch.zeros(2, 60, dtype=torch.long), kv_base)
    assert isinstance(kv_base, KVCache)


# ---- gradients ---------------------------------------------------------------------------------


def test_gradients_flow_to_every_parameter(model):
    model.zero_grad(set_to_none=True)
    x = tokens(4, 16, seed=4)
    logits = model(x)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.rand_like(logits))
    loss.backward()
    params = dict(model.named_parameters())
    assert params
    for name, p in params.items():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    used = [n for n in params if not n.startswith("pos_embed")]
    assert all(params[n].grad.abs().sum() > 0 for n in used)
    model.zero_grad(set_to_none=True)


def test_residual_edits_propagate_causally(model):
    """Patching the residual stream (what the interventions do) changes position t and later only."""
    x = tokens(2, 10, seed=5)
    t = 4
    bump = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))

    def add(resid, hook):
        resid = resid.clone()
        resid[:, t] += bump
        return resid

    with torch.no_grad():
        base = model(x)
        for name in ("hook_embed", "blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"):
            out = model.run_with_hooks(x, fwd_hooks=[(name, add)])
            diff = (out - base).abs().amax(dim=(0, 2))
            assert diff[:t].max() == 0, name
            assert diff[t] > 1e-4, name
            if not name.startswith("blocks.1"):
                assert diff[t + 1 :].max() > 1e-5, name  # later layers read position t
