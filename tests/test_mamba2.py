"""HookedMamba2: equality with Hugging Face ``Mamba2ForCausalLM`` (torch path, float32), the chunked scan
against the sequential reference, gradients, hooks, state edits and the recurrent-state API."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from hooks import scan as S  # noqa: E402
from hooks import ssd  # noqa: E402
from hooks.mamba import MambaState  # noqa: E402
from hooks.mamba2 import HookedMamba2, Mamba2Config  # noqa: E402

GATES = ("nonnegative", "signed", "time_invariant")

HF_CONFIGS = [
    dict(hidden_size=16, num_hidden_layers=1, state_size=4, expand=2, num_heads=8, head_dim=4, n_groups=1,
         vocab_size=11, chunk_size=8),
    dict(hidden_size=32, num_hidden_layers=2, state_size=16, expand=2, num_heads=4, head_dim=16, n_groups=2,
         vocab_size=20, chunk_size=16, conv_kernel=3),
    dict(hidden_size=24, num_hidden_layers=3, state_size=8, expand=3, num_heads=6, head_dim=12, n_groups=3,
         vocab_size=13, chunk_size=32, use_bias=True, use_conv_bias=False, tie_word_embeddings=True,
         layer_norm_epsilon=1e-4, time_step_limit=(0.01, 2.0)),
]


def _perturb(model, seed, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # off the special inits (D = 1, norms = 1, A_log = log(1..H), ...)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def _hf_model(seed=0, **kw):
    torch.manual_seed(seed)
    hf = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**kw)).float().eval()
    _perturb(hf, seed)
    return hf


def _hf_logits(hf, toks):
    with torch.no_grad():
        return hf(toks, use_cache=False).logits


def _toks(V, B=3, L=45, seed=1):
    return torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kw", HF_CONFIGS, ids=["1L-H8-G1", "2L-H4-G2-K3", "3L-H6-G3-bias-limit"])
def test_logits_equal_hf(kw):
    hf = _hf_model(**kw)
    m = HookedMamba2.from_hf(hf)
    c = m.cfg
    assert (c.n_layers, c.d_state, c.n_heads, c.headdim, c.n_groups) == (
        kw["num_hidden_layers"], kw["state_size"], kw["num_heads"], kw["head_dim"], kw["n_groups"])
    toks = _toks(kw["vocab_size"])
    ref = _hf_logits(hf, toks)
    assert ref.abs().max() > 1.0  # a non-trivial comparison
    for scan in ("chunked", "sequential"):
        m.cfg.scan = scan
        with torch.no_grad():
            assert float((m(toks) - ref).abs().max()) <= 1e-4, scan


def test_mamba_ssm_naming_and_state_dict_with_n_groups():
    kw = HF_CONFIGS[1]
    hf = _hf_model(seed=2, **kw)
    toks = _toks(kw["vocab_size"], seed=3)
    ref = _hf_logits(hf, toks)
    sd = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in hf.state_dict().items()}
    m = HookedMamba2.from_hf(sd, n_groups=2, chunk_size=16)
    with torch.no_grad():
        assert float((m(toks) - ref).abs().max()) <= 1e-4
    with pytest.raises(ValueError, match="not a Mamba-2"):
        HookedMamba2.from_hf({**sd, "backbone.layers.0.mixer.x_proj.weight": torch.zeros(1)})


@pytest.mark.parametrize("cfg", [dict(), dict(tie_embeddings=False, bias=True, d_conv=2, n_groups=2, dt_limit=(0.0, 3.0))])
def test_to_hf_round_trip_and_from_pretrained(cfg, tmp_path):
    m = HookedMamba2(Mamba2Config(d_model=20, n_layers=2, vocab_size=10, d_state=6, headdim=10, chunk_size=8, **cfg),
                     seed=5)
    _perturb(m, 6)
    hf = m.to_hf()
    assert isinstance(hf, transformers.Mamba2ForCausalLM)
    toks = _toks(10, B=2, L=19, seed=7)
    with torch.no_grad():
        want = m(toks)
        assert float((_hf_logits(hf, toks) - want).abs().max()) <= 1e-4
    back = HookedMamba2.from_hf(hf)
    assert back.cfg.to_dict() == {**m.cfg.to_dict(), "dt_min": back.cfg.dt_min}
    for (k, v), w in zip(m.state_dict().items(), back.state_dict().values()):
        assert torch.equal(v, w), k
    hf.save_pretrained(tmp_path / "m")
    loaded = HookedMamba2.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        assert float((loaded(toks) - want).abs().max()) <= 1e-5


def test_to_hf_refuses_other_gates():
    with pytest.raises(ValueError, match="nonnegative"):
        HookedMamba2(Mamba2Config(d_model=8, n_layers=1, vocab_size=5, headdim=4, gate="signed")).to_hf()


@pytest.mark.parametrize("kw, msg", [
    (dict(headdim=5), "multiple of headdim"),
    (dict(headdim=4, n_groups=3), "multiple of n_groups"),
    (dict(gate="relu"), "gate must be"),
    (dict(dt_limit=(1.0, 0.5)), "dt_limit"),
])
def test_config_rejects_impossible_values(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Mamba2Config(**{"d_model": 8, "n_layers": 1, "vocab_size": 5, **kw})


def test_config_round_trip_and_rejects_inconsistent():
    c = Mamba2Config(d_model=8, n_layers=2, vocab_size=5, headdim=4, dt_limit=(0.0, 2.0))
    assert Mamba2Config.from_dict(c.to_dict()) == c
    assert (c.d_inner, c.n_heads, c.conv_dim) == (16, 4, 16 + 2 * 16)
    with pytest.raises(ValueError, match="inconsistent"):
        Mamba2Config.from_dict({**c.to_dict(), "n_heads": 3})


# ------------------------------------------------------------------------------ the scan


def _scan_inputs(Bs, L, H, P, G, N, seed=0, dtype=torch.float32, h0=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    x, dt = r(Bs, L, H, P), torch.nn.functional.softplus(r(Bs, L, H) - 1.0)
    A = -torch.rand(H, generator=g, dtype=dtype) - 0.05
    return x, dt, A, r(Bs, L, G, N), r(Bs, L, G, N), r(H), (r(Bs, H, P, N) if h0 else None)


@pytest.mark.parametrize("gate", GATES)
def test_chunked_scan_equals_sequential_at_4096(gate):
    x, dt, A, Bm, Cm, D, h0 = _scan_inputs(2, 4096, 4, 3, 2, 4, seed=1)
    y_ref, h_ref = ssd.ssd_scan_ref(x, dt, A, Bm, Cm, D, h0, gate)
    y, last = ssd.ssd_scan(x, dt, A, Bm, Cm, D, h0, gate, chunk=64)
    assert float((y - y_ref).abs().max()) <= 1e-4
    assert float((last - h_ref[:, -1]).abs().max()) <= 1e-4
    # the per-step states the hooks see (hooks.scan.linear_recurrence of the discretized gate and input)
    a, b = ssd.discretize(x, dt, ssd.gate_values(dt, A, gate), Bm)
    h = S.linear_recurrence(a, b, h0)
    assert float((h - h_ref).abs().max()) <= 1e-4
    assert float((ssd.readout(h, Cm, x, D) - y_ref).abs().max()) <= 1e-4


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunk_sizes_and_ragged_lengths(chunk):
    x, dt, A, Bm, Cm, D, h0 = _scan_inputs(2, 101, 6, 2, 3, 5, seed=2, dtype=torch.float64)
    y_ref, h_ref = ssd.ssd_scan_ref(x, dt, A, Bm, Cm, D, h0, "signed")
    y, last = ssd.ssd_scan(x, dt, A, Bm, Cm, D, h0, "signed", chunk=chunk)
    assert float((y - y_ref).abs().max()) <= 1e-10 and float((last - h_ref[:, -1]).abs().max()) <= 1e-10


@pytest.mark.parametrize("gate", GATES)
def test_chunked_scan_finite_at_1e5(gate):
    x, dt, A, Bm, Cm, D, _ = _scan_inputs(1, 100_000, 2, 2, 1, 2, seed=3, h0=False)
    y, last = ssd.ssd_scan(x, dt, A * 1e-3, Bm, Cm, D, None, gate, chunk=64)  # slow decay: long memory
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    # the last state is the reference recurrence continued over the last 64 steps from the state before
    _, h_mid = ssd.ssd_scan(x[:, :-64], dt[:, :-64], A * 1e-3, Bm[:, :-64], Cm[:, :-64], D, None, gate)
    _, h_ref = ssd.ssd_scan_ref(x[:, -64:], dt[:, -64:], A * 1e-3, Bm[:, -64:], Cm[:, -64:], D, h_mid, gate)
    assert float((last - h_ref[:, -1]).abs().max()) <= 1e-4 * (1 + float(h_ref.abs().max()))


def test_deep_decay_loses_nothing():
    """Strong resets (log-gate -30 per step, as in the constructions) before a slow stretch in one chunk."""
    x, dt, A, Bm, Cm, D, h0 = _scan_inputs(1, 64, 2, 2, 1, 2, seed=4)
    dt = dt.clone()
    dt[:, :40] = 30.0
    dt[:, 40:] = 1e-6
    A = torch.full((2,), -1.0)
    y_ref, _ = ssd.ssd_scan_ref(x, dt, A, Bm, Cm, D, h0)
    y, _ = ssd.ssd_scan(x, dt, A, Bm, Cm, D, h0, chunk=64)
    assert float((y - y_ref).abs().max()) <= 1e-6 * float(y_ref.abs().max())  # float32 rounding only


@pytest.mark.parametrize("gate", GATES)
def test_chunked_scan_gradcheck(gate):
    inputs = _scan_inputs(2, 11, 4, 2, 2, 3, seed=5, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in inputs]

    def f(*args):
        y, last = ssd.ssd_scan(*args, gate=gate, chunk=4)
        return y, last

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("with_h0", [True, False])
def test_ssd_states_equal_reference_loop_and_gradcheck(gate, with_h0):
    """The per-step states hook_ssm_state shows (hooks.ssd.ssd_states) are the reference loop's, and
    their hand-written backward passes gradcheck (float64, 3 groups of 2 heads)."""
    x, dt, A, Bm, Cm, D, h0 = _scan_inputs(2, 13, 6, 2, 3, 5, seed=9, dtype=torch.float64, h0=with_h0)
    _, h_ref = ssd.ssd_scan_ref(x, dt, A, Bm, Cm, D, h0, gate)
    h = ssd.ssd_states(x, dt, ssd.gate_values(dt, A, gate), Bm, h0)
    assert float((h - h_ref).abs().max()) <= 1e-12
    inputs = [t.requires_grad_() for t in (x, dt, A, Bm) + ((h0,) if with_h0 else ())]

    def f(x, dt, A, Bm, *h0):
        return ssd.ssd_states(x, dt, ssd.gate_values(dt, A, gate), Bm, h0[0] if h0 else None)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("gate", GATES)
def test_model_gradients_chunked_equal_sequential(gate):
    cfg = dict(d_model=16, n_layers=2, vocab_size=7, d_state=4, headdim=8, n_groups=2, chunk_size=8, gate=gate)
    toks = _toks(7, B=2, L=37, seed=8)
    grads = []
    for scan in ("chunked", "sequential"):
        m = HookedMamba2(Mamba2Config(**cfg, scan=scan), seed=3)
        _perturb(m, 4, 0.1)
        m(toks).pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4), n


# ------------------------------------------------------------------------------ hooks and state


def _model(gate="nonnegative", **kw):
    cfg = dict(d_model=16, n_layers=2, vocab_size=9, d_state=4, headdim=8, n_groups=2, chunk_size=8, gate=gate)
    m = HookedMamba2(Mamba2Config(**{**cfg, **kw}), seed=1)
    _perturb(m, 2, 0.1)
    return m.eval()


def test_run_with_cache_has_every_hook_with_documented_shape():
    m = _model()
    c = m.cfg
    E, H, P, G, N, X = c.d_inner, c.n_heads, c.headdim, c.n_groups, c.d_state, c.conv_dim
    toks = _toks(9, B=2, L=13)
    logits, cache = m.run_with_cache(toks)
    Bs, L = toks.shape
    want = {"in_proj": (Bs, L, E + X + H), "gate": (Bs, L, E), "conv": (Bs, L, X), "ssm_input": (Bs, L, H, P),
            "delta": (Bs, L, H), "B": (Bs, L, G, N), "C": (Bs, L, G, N), "a": (Bs, L, H),
            "ssm_state": (Bs, L, H, P, N), "y": (Bs, L, E)}
    for name, shape in want.items():
        assert tuple(cache[f"blocks.1.mixer.hook_{name}"].shape) == shape, name
    assert tuple(cache["blocks.0.hook_resid_post"].shape) == (Bs, L, c.d_model)
    with torch.no_grad():  # observing changes nothing (the states then come from the recurrence: rounding)
        assert float((logits - m(toks)).abs().max()) <= 1e-5
    a = cache["blocks.0.mixer.hook_a"]
    assert torch.allclose(a, torch.exp(cache["blocks.0.mixer.hook_delta"] * -torch.exp(m.blocks[0].mixer.A_log)))


@pytest.mark.parametrize("gate", GATES)
def test_gate_ranges(gate):
    m = _model(gate)
    _, cache = m.run_with_cache(_toks(9, B=2, L=13))
    a = cache["blocks.0.mixer.hook_a"]
    if gate == "nonnegative":
        assert (a > 0).all() and (a < 1).all()
    elif gate == "signed":
        assert (a > -1).all() and (a < 1).all()
    else:
        assert torch.equal(a, a[:1, :1].expand_as(a))


@pytest.mark.parametrize("gate", GATES)
def test_prefix_then_suffix_equals_full_run_and_hooked_states(gate):
    m = _model(gate)
    toks = _toks(9, B=2, L=30, seed=4)
    with torch.no_grad():
        full, _ = m.run_with_cache(toks)
        _, cache = m.run_with_cache(toks)
        pre, st = m(toks[:, :17], return_state=True)
        post = m(toks[:, 17:], state=st)
    assert isinstance(st, MambaState) and tuple(st.layers[0].ssm.shape) == (2, 4, 8, 4)
    assert float((torch.cat([pre, post], 1) - full).abs().max()) <= 1e-5
    assert float((cache["blocks.1.mixer.hook_ssm_state"][:, 16] - st.layers[1].ssm).abs().max()) <= 1e-5
    zero = m.init_state(2)
    with torch.no_grad():
        assert float((m(toks, state=zero) - full).abs().max()) <= 1e-6
    with pytest.raises(ValueError, match="expected"):
        m(toks, state=MambaState(layers=[st.layers[0], st.layers[0]._map(lambda t: t[..., :1])]))


@pytest.mark.parametrize("mode", ["overwrite", "add"])
def test_state_edit_carried_forward_equals_restart_from_edited_state(mode):
    """Editing h_t is continuing from the edited state (one layer: y_t, which reads the edited h_t, only
    reaches the logits at t)."""
    m = _model(n_layers=1)
    toks = _toks(9, B=2, L=25, seed=5)
    t, site = 10, "blocks.0.mixer.hook_ssm_state"
    v = torch.randn(2, 4, 8, 4, generator=torch.Generator().manual_seed(9))

    def edit(h, hook):
        h = h.clone()
        h[:, t] = v if mode == "overwrite" else h[:, t] + v
        return h

    with torch.no_grad(), m.state_edit_mode(mode):
        edited = m.run_with_hooks(toks, fwd_hooks=[(site, edit)])
        _, st = m(toks[:, : t + 1], return_state=True)
        st.layers[0].ssm = v if mode == "overwrite" else st.layers[0].ssm + v
        cont = m(toks[:, t + 1:], state=st)
    assert float((edited[:, t + 1:] - cont).abs().max()) <= 1e-5
    assert not torch.allclose(edited[:, t + 1:], m(toks)[:, t + 1:].detach(), atol=1e-3)


def test_gate_edit_equals_restart_from_zero_state():
    """a_t := 0 makes h_t = Δ_t x_t B_t: the same as restarting the recurrence (not the conv) at t."""
    m = _model(n_layers=1)
    toks = _toks(9, B=2, L=25, seed=6)
    t = 9

    def zero_at_t(a, hook):
        a = a.clone()
        a[:, t] = 0.0
        return a

    with torch.no_grad():
        edited = m.run_with_hooks(toks, fwd_hooks=[("blocks.0.mixer.hook_a", zero_at_t)])
        _, st = m(toks[:, :t], return_state=True)
        st.layers[0].ssm = torch.zeros_like(st.layers[0].ssm)
        cont = m(toks[:, t:], state=st)
    assert float((edited[:, t:] - cont).abs().max()) <= 1e-5


def test_backward_through_state_edit_reaches_the_hook():
    m = _model(n_layers=1)
    toks = _toks(9, B=1, L=12, seed=7)
    v = torch.zeros(1, 4, 8, 4, requires_grad=True)

    def add(h, hook):
        h = h.clone()
        h[:, 5] = h[:, 5] + v
        return h

    with m.state_edit_mode("add"):
        m.run_with_hooks(toks, fwd_hooks=[("blocks.0.mixer.hook_ssm_state", add)])[:, -1].sum().backward()
    assert v.grad is not None and float(v.grad.abs().sum()) > 0
    # same gradient as injecting v as the state of a continuation
    v2 = torch.zeros(1, 4, 8, 4, requires_grad=True)
    with torch.no_grad():
        _, st = m(toks[:, :6], return_state=True)
    st.layers[0].ssm = st.layers[0].ssm + v2
    m(toks[:, 6:], state=st)[:, -1].sum().backward()
    assert torch.allclose(v.grad, v2.grad, atol=1e-5)


def test_build_model_family_and_train_cli(tmp_path):
    from trained_models import load
    from trained_models.train import main

    out = tmp_path / "run"
    main(["--language", "parity", "--model", "mamba2", "--layers", "1", "--d-model", "16", "--gate", "signed",
          "--n-train", "64", "--n-dev", "16", "--n-test", "16", "--epochs", "1", "--batch-size", "16",
          "--threads", "1", "--out", str(out), "--no-progress"])
    model, card = load(out)
    assert card["model"]["family"] == "mamba2" and isinstance(model, HookedMamba2)
    assert model.cfg.gate == "signed"


@pytest.mark.parametrize("with_window", [True, False])
def test_causal_conv1d_equals_torch_conv1d_and_gradcheck(with_window):
    """hooks.mamba_mixer.causal_conv1d (both mixers' conv) against F.conv1d on the window-prefixed input."""
    from hooks.mamba_mixer import causal_conv1d

    g = torch.Generator().manual_seed(11)
    x, w, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((2, 9, 5), (5, 1, 4), (5,)))
    window = torch.randn(2, 5, 3, generator=g, dtype=torch.float64) if with_window else None
    out, new_window = causal_conv1d(x, window, w, b)
    xin = torch.cat([window if with_window else x.new_zeros(2, 5, 3), x.transpose(1, 2)], -1)
    ref = torch.nn.functional.conv1d(xin, w, b, groups=5).transpose(1, 2)
    assert float((out - ref).abs().max()) <= 1e-12 and torch.equal(new_window, xin[:, :, -3:])
    assert torch.autograd.gradcheck(lambda x, w, b: causal_conv1d(x, window, w, b)[0],
                                    [t.requires_grad_() for t in (x, w, b)])
