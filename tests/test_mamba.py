"""HookedMamba: config, recurrent-state API, gates, hooks/cache, loading errors."""
from __future__ import annotations

import pytest
import torch

from hooks import HookedMamba, MambaConfig, MambaState
from hooks.mamba import LayerState


def _model(gate="nonnegative", seed=0, **kw):
    base = dict(d_model=16, n_layers=2, vocab_size=9, d_state=4, d_conv=4, expand=2, gate=gate)
    base.update(kw)
    return HookedMamba(MambaConfig(**base), seed=seed)


def _tokens(B=3, L=14, V=9, seed=0):
    return torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- config


def test_config_derived_fields_and_round_trip():
    cfg = MambaConfig(d_model=40, n_layers=2, vocab_size=10, pad_vocab_multiple=8, expand=1.5)
    assert cfg.dt_rank == 3 and cfg.d_inner == 60 and cfg.d_vocab == 16
    again = MambaConfig.from_dict(cfg.to_dict())
    assert again == cfg
    m = HookedMamba(cfg.to_dict(), seed=0)  # a dict works as well
    assert m(_tokens(V=10)).shape == (3, 14, 10)  # logits keep vocab_size, not the padded size


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(d_model=0), "d_model"),
        (dict(n_layers=1.5), "n_layers"),
        (dict(d_state=True), "d_state"),
        (dict(expand=0.3), "d_inner"),
        (dict(expand=-1), "expand"),
        (dict(gate="complex"), "gate"),
        (dict(scan="magic"), "scan"),
        (dict(dt_min=0.5, dt_max=0.1), "dt_min"),
        (dict(norm_eps=0.0), "norm_eps"),
        (dict(dt_rank=0), "dt_rank"),
        (dict(tie_embeddings="yes"), "tie_embeddings"),
    ],
)
def test_config_rejects_impossible_values(kw, msg):
    base = dict(d_model=8, n_layers=1, vocab_size=5)
    base.update(kw)
    with pytest.raises(ValueError, match=msg):
        MambaConfig(**base)


def test_config_from_dict_rejects_unknown_and_inconsistent():
    d = MambaConfig(d_model=8, n_layers=1, vocab_size=5).to_dict()
    with pytest.raises(ValueError, match="unknown keys"):
        MambaConfig.from_dict({**d, "n_heads": 4})
    with pytest.raises(ValueError, match="d_inner"):
        MambaConfig.from_dict({**d, "d_inner": 99})


def test_seed_makes_init_deterministic():
    a, b = _model(seed=3), _model(seed=3)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), k
    assert not torch.equal(_model(seed=4).embed.weight, a.embed.weight)


def test_bad_tokens_raise():
    m = _model()
    with pytest.raises(ValueError, match=r"\[0, 9\)"):
        m(torch.tensor([[0, 9]]))
    with pytest.raises(ValueError, match="integer tensor"):
        m(torch.zeros(2, 3))


# ---------------------------------------------------------------- recurrent state API


@pytest.mark.parametrize("gate", ["nonnegative", "signed", "time_invariant"])
def test_prefix_then_suffix_equals_full_run(gate):
    m = _model(gate)
    toks = _tokens(L=15)
    full = m(toks)
    pieces, state = [], None
    for s, e in [(0, 1), (1, 2), (2, 9), (9, 15)]:  # segments shorter than the conv window too
        out, state = m(toks[:, s:e], state, return_state=True)
        pieces.append(out)
    assert float((torch.cat(pieces, 1) - full).abs().max().detach()) <= 1e-5
    _, state_full = m(toks, return_state=True)
    for ls, lf in zip(state.layers, state_full.layers):
        assert torch.allclose(ls.ssm, lf.ssm, atol=1e-5) and torch.allclose(ls.conv, lf.conv, atol=1e-6)


def test_zero_state_equals_no_state_and_state_methods():
    m = _model()
    toks = _tokens()
    zero = m.init_state(3)
    assert torch.equal(m(toks, zero), m(toks))
    _, st = m(toks, return_state=True)
    assert isinstance(st, MambaState) and st.batch_size == 3
    assert st.layers[0].conv.shape == (3, 32, 3) and st.layers[0].ssm.shape == (3, 32, 4)
    c = st.clone()
    c.layers[0].ssm.zero_()
    assert not torch.equal(c.layers[0].ssm, st.layers[0].ssm)
    assert st.select(1).batch_size == 1 and torch.equal(st.select(1).layers[1].ssm, st.layers[1].ssm[1:2])
    assert not st.detach().layers[0].ssm.requires_grad
    with pytest.raises(ValueError, match="layers"):
        m(toks, MambaState(layers=st.layers[:1]))
    with pytest.raises(ValueError, match=r"state.layers\[0\].ssm"):
        m(toks, MambaState(layers=[LayerState(ls.conv, ls.ssm[:, :, :2]) for ls in st.layers]))


def test_swapping_all_layer_states_is_continuing_the_other_run():
    m = _model()
    p1, p2, suffix = _tokens(L=6, seed=1), _tokens(L=6, seed=2), _tokens(L=5, seed=3)
    _, s1 = m(p1, return_state=True)
    _, s2 = m(p2, return_state=True)
    patched = MambaState(layers=list(s1.layers))
    for layer in range(m.cfg.n_layers):
        patched.layers[layer] = s2.layers[layer]
    assert torch.allclose(m(suffix, patched), m(suffix, s2), atol=0)
    one = MambaState(layers=[s1.layers[0], s2.layers[1]])  # one layer swapped: differs from both
    out = m(suffix, one)
    assert not torch.allclose(out, m(suffix, s1)) and not torch.allclose(out, m(suffix, s2))


# ---------------------------------------------------------------- gates


@pytest.mark.parametrize("gate", ["nonnegative", "signed", "time_invariant"])
def test_gates_forward_backward_and_sign(gate):
    m = _model(gate, seed=1)
    with torch.no_grad():
        for block in m.blocks:
            block.mixer.dt_proj.bias.add_(2.5)  # large steps: exp(ΔA) far below 1/2
    toks = _tokens(L=20)
    logits, cache = m.run_with_cache(toks, names_filter=lambda n: n.endswith("hook_a"))
    a = torch.stack([cache[f"blocks.{i}.mixer.hook_a"] for i in range(2)])
    if gate == "signed":
        assert (a < 0).any() and (a > -1).all() and (a < 1).all()
    else:
        assert (a > 0).all() and (a <= 1).all()
    if gate == "time_invariant":
        assert (a == a[:, :1, :1]).all()
    m(toks).logsumexp(-1).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert m.blocks[0].mixer.A_log.grad.abs().sum() > 0
    assert m.blocks[0].mixer.dt_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("gate", ["nonnegative", "signed", "time_invariant"])
def test_sequential_scan_config_equals_fast(gate):
    fast = _model(gate, scan="fast")
    seq = _model(gate, scan="sequential")
    toks = _tokens()
    lf, ls = fast(toks), seq(toks)
    assert float((lf - ls).abs().max().detach()) <= 1e-5
    lf.pow(2).sum().backward()
    ls.pow(2).sum().backward()
    for (name, p), q in zip(fast.named_parameters(), seq.parameters()):
        assert float((p.grad - q.grad).abs().max()) <= 1e-4 * float(q.grad.abs().max()) + 1e-7, name


# ---------------------------------------------------------------- hooks


HOOK_SHAPES = {  # B=3, L=14, D=16, E=32, N=4, V=9
    "hook_embed": (3, 14, 16),
    "hook_norm_final": (3, 14, 16),
    "hook_logits": (3, 14, 9),
    **{
        f"blocks.{i}.{name}": shape
        for i in range(2)
        for name, shape in {
            "hook_resid_pre": (3, 14, 16),
            "hook_resid_post": (3, 14, 16),
            "mixer.hook_in_proj": (3, 14, 64),
            "mixer.hook_gate": (3, 14, 32),
            "mixer.hook_conv": (3, 14, 32),
            "mixer.hook_ssm_input": (3, 14, 32),
            "mixer.hook_delta": (3, 14, 32),
            "mixer.hook_B": (3, 14, 4),
            "mixer.hook_C": (3, 14, 4),
            "mixer.hook_a": (3, 14, 32, 4),
            "mixer.hook_ssm_state": (3, 14, 32, 4),
            "mixer.hook_ssm_state_flat": (3, 14, 128),
            "mixer.hook_y": (3, 14, 32),
        }.items()
    },
}


def test_run_with_cache_has_every_hook_with_documented_shape():
    m = _model()
    toks = _tokens()
    logits, cache = m.run_with_cache(toks)
    assert set(cache.keys()) == set(HOOK_SHAPES) == set(m.hook_dict)
    for name, shape in HOOK_SHAPES.items():
        assert tuple(cache[name].shape) == shape, name
    assert torch.equal(logits, m(toks)) and torch.equal(cache["hook_logits"], logits)
    # the documented relations between hooks
    E = 32
    c0 = {k[len("blocks.0.mixer."):]: v for k, v in cache.items() if k.startswith("blocks.0.mixer.")}
    assert torch.allclose(c0["hook_gate"], torch.nn.functional.silu(c0["hook_in_proj"][..., E:]))
    assert torch.equal(c0["hook_ssm_input"], c0["hook_conv"])
    h, C, x = c0["hook_ssm_state"], c0["hook_C"], c0["hook_ssm_input"]
    y = (h * C[:, :, None, :]).sum(-1) + m.blocks[0].mixer.D * x
    assert torch.allclose(c0["hook_y"], y, atol=1e-5)
    assert torch.allclose(cache["blocks.0.hook_resid_post"], cache["blocks.1.hook_resid_pre"])
    _, st = m(toks, return_state=True)
    assert torch.allclose(st.layers[1].ssm, cache["blocks.1.mixer.hook_ssm_state"][:, -1])


def test_hooks_context_and_run_with_hooks_restore_the_model():
    m = _model()
    toks = _tokens()
    clean = m(toks)

    def zero_y(y, hook):
        return torch.zeros_like(y)

    with m.hooks(fwd_hooks=[("blocks.0.mixer.hook_y", zero_y)]):
        patched = m(toks)
    assert not torch.allclose(patched, clean)
    assert torch.equal(m.run_with_hooks(toks, fwd_hooks=[("blocks.0.mixer.hook_y", zero_y)]), patched)
    assert torch.equal(m(toks), clean)


def test_caching_the_states_changes_nothing_and_backward_hooks_fire():
    m = _model()
    toks = _tokens()
    clean = m(toks)
    logits, cache = m.run_with_cache(toks, names_filter=lambda n: n.endswith("hook_ssm_state"))
    assert torch.equal(logits, clean) and len(cache) == 2
    grads = {}

    def save_grad(g, hook):
        grads[hook.name] = g.detach()

    with m.hooks(bwd_hooks=[("blocks.0.mixer.hook_ssm_state", save_grad)]):
        out = m(toks)
        assert torch.allclose(out, clean, atol=1e-6)
        out.sum().backward()
    g = grads["blocks.0.mixer.hook_ssm_state"]
    assert g.shape == (3, 14, 32, 4) and g.abs().sum() > 0


def test_cuda_scan_without_mamba_ssm_raises_clearly():
    from hooks.selective_scan import mamba_ssm_available

    if mamba_ssm_available():
        pytest.skip("mamba-ssm with CUDA is available here")
    with pytest.raises(RuntimeError, match="mamba-ssm"):
        _model(scan="cuda")(_tokens())


def test_float64_model_matches_float32():
    m = _model()
    toks = _tokens()
    with torch.no_grad():
        ref = m(toks)
        out = m.double()(toks)
    assert out.dtype == torch.float64 and float((out - ref.double()).abs().max()) <= 1e-5


def test_load_state_dict_mismatch_names_parameter_and_config():
    small, big = _model(), _model(d_state=8)
    with pytest.raises(ValueError) as err:
        small.load_state_dict(big.state_dict())
    msg = str(err.value)
    assert "blocks.0.mixer.A_log" in msg and "(32, 8)" in msg and "(32, 4)" in msg and "d_state=4" in msg
    sd = small.state_dict()
    sd.pop("norm_f.weight")
    with pytest.raises(ValueError, match="missing keys.*norm_f.weight"):
        small.load_state_dict(sd)
    again = _model(seed=9)
    again.load_state_dict(small.state_dict())
    assert torch.equal(again(_tokens()), small(_tokens()))
