"""hooks.diagonal: the scan, the state API and hook edits against an obviously-sequential reference."""
from __future__ import annotations

import pytest
import torch

from hooks.diagonal import (
    DiagonalLayer,
    DiagonalSSMConfig,
    DiagonalSSMState,
    HookedDiagonalSSM,
    diagonal_scan,
    diagonal_scan_reference,
)

V = 6


def _model(gate="nonnegative", dtype="float64", seed=0, scan="doubling"):
    torch.manual_seed(seed)
    return HookedDiagonalSSM(DiagonalSSMConfig(d_vocab=V, d_state=[5, 3, 4], gate=gate, dtype=dtype, scan=scan))


def _tokens(B=3, L=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(3, V, (B, L), generator=g)
    t[:, 0] = 1
    return t


def _sequential_forward(model, tokens, edits=(), step=None):
    """One token at a time through every layer, calling each layer's own a(u), b(u) on a single
    position; ``edits`` = [(layer, batch, pos, coord, value)] overwrite h at that step, then
    ``step(layer, t, h)`` (if given) replaces h. Returns (logits [B, L, V], states per layer [B, L, S])."""
    cfg = model.cfg
    dt = cfg.torch_dtype
    B, L = tokens.shape
    x = torch.nn.functional.one_hot(tokens, cfg.d_vocab).to(dt) if model.embed is None else model.embed(tokens).to(dt)
    h = [torch.zeros(B, s, dtype=dt) for s in cfg.d_state]
    sl = cfg.slices()
    logits, states = [], [[] for _ in cfg.d_state]
    for t in range(L):
        resid = torch.cat([x[:, t : t + 1], torch.zeros(B, 1, sum(cfg.d_out), dtype=dt)], dim=-1)
        for l, block in enumerate(model.blocks):
            a = block.gate(resid)[:, 0]
            b = block.inp(resid)[:, 0]
            h[l] = a * h[l] + b
            for (el, eb, et, es, val) in edits:
                if el == l and et == t:
                    h[l] = h[l].clone()
                    h[l][eb, es] = val
            if step is not None:
                h[l] = step(l, t, h[l])
            states[l].append(h[l])
            z = h[l][:, None] if block.out is None else block.out(h[l][:, None], resid)
            resid = resid.clone()
            resid[..., sl[l + 1]] += z
        logits.append(model.head(resid)[:, 0])
    return torch.stack(logits, 1), [torch.stack(s, 1) for s in states]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scan_matches_reference_with_exact_gates(dtype):
    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 300, 7, generator=g, dtype=dt).tanh()
    special = torch.tensor([0.0, 1.0, -1.0], dtype=dt)
    pick = torch.randint(0, 4, a.shape, generator=g)
    a = torch.where(pick < 3, special[pick.clamp(max=2)], a)  # mostly exact 0 / 1 / -1 gates
    b = torch.randn(4, 300, 7, generator=g, dtype=dt)
    h0 = torch.randn(4, 7, generator=g, dtype=dt)
    tol = 1e-4 if dtype == "float32" else 1e-12
    torch.testing.assert_close(diagonal_scan(a, b, h0), diagonal_scan_reference(a, b, h0), atol=tol, rtol=tol)


def test_scan_counts_exactly():
    g = torch.Generator().manual_seed(0)
    L = 20000
    a = torch.ones(2, L, 3)
    a[:, ::997, 2] = 0.0  # a reset now and then
    b = torch.randint(-1, 2, (2, L, 3), generator=g).float()
    ref = diagonal_scan_reference(a.double(), b.double())
    assert torch.equal(diagonal_scan(a, b), ref.float())
    assert torch.equal(diagonal_scan(a.double(), b.double()), ref)


def test_scan_handles_empty_and_single_step():
    a, b = torch.ones(2, 0, 3), torch.ones(2, 0, 3)
    assert diagonal_scan(a, b).shape == (2, 0, 3)
    h0 = torch.full((2, 3), 2.0)
    out = diagonal_scan(torch.full((2, 1, 3), -1.0), torch.ones(2, 1, 3), h0)
    assert torch.equal(out, torch.full((2, 1, 3), -1.0))


@pytest.mark.parametrize("gate", ["nonnegative", "signed", "time_invariant"])
def test_model_matches_sequential_reference(gate):
    model = _model(gate)
    tokens = _tokens()
    ref_logits, ref_states = _sequential_forward(model, tokens)
    logits, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(logits, ref_logits)
    for l, ref in enumerate(ref_states):
        torch.testing.assert_close(cache[f"blocks.{l}.hook_ssm_state"], ref)
    assert logits.dtype == torch.float64


def test_hook_names_and_shapes():
    model = _model()
    tokens = _tokens(B=2, L=11)
    _, cache = model.run_with_cache(tokens)
    D = model.cfg.d_resid
    assert cache["hook_embed"].shape == (2, 11, V)
    for l, s in enumerate(model.cfg.d_state):
        assert cache[f"blocks.{l}.hook_ssm_state"].shape == (2, 11, s)
        assert cache[f"blocks.{l}.hook_a"].shape == (2, 11, s)
        assert cache[f"blocks.{l}.hook_b"].shape == (2, 11, s)
        assert cache[f"blocks.{l}.hook_resid_pre"].shape == (2, 11, D)
        assert cache[f"blocks.{l}.hook_resid_post"].shape == (2, 11, D)
    assert cache["hook_norm_final"].shape == (2, 11, D)
    assert cache["hook_logits"].shape == (2, 11, V)
    # the residual slices: layer l's output sits in its own slice
    post = cache["blocks.1.hook_resid_post"]
    torch.testing.assert_close(model.cfg.split(post)[2], cache["blocks.1.hook_z"])
    assert torch.all(model.cfg.split(post)[3] == 0)


@pytest.mark.parametrize("scan", ["doubling", "sequential"])
def test_prefix_then_suffix_equals_whole_run(scan):
    model = _model(scan=scan)
    tokens = _tokens(L=50)
    full, state = model(tokens, return_state=True)
    for cut in (1, 17, 49):
        a, st = model(tokens[:, :cut], return_state=True)
        b, st2 = model(tokens[:, cut:], state=st, return_state=True)
        torch.testing.assert_close(torch.cat([a, b], 1), full)
        for x, y in zip(st2.layers, state.layers):
            torch.testing.assert_close(x.h, y.h)
    # an empty suffix keeps the state
    _, st3 = model(tokens[:, :0], state=state, return_state=True)
    for x, y in zip(st3.layers, state.layers):
        assert torch.equal(x.h, y.h)


@pytest.mark.parametrize("swap", [(2,), (1, 2)])
def test_state_swap_is_the_interchange_intervention(swap):
    """Continuing A's run with the states of the layers in ``swap`` taken from B equals overwriting
    those layers' h at the junction with B's values (hook edits), then running on. (The swapped set
    must be closed downwards in depth for the equality at the junction: an edit of layer 1 alone
    would also change layer 2's state at the junction.)"""
    model = _model()
    A, Bt = _tokens(B=2, L=30, seed=3), _tokens(B=2, L=30, seed=4)
    cut = 12
    _, sa = model(A[:, :cut], return_state=True)
    _, sb = model(Bt[:, :cut], return_state=True)
    swapped = DiagonalSSMState([(sb if l in swap else sa).layers[l] for l in range(3)])
    cont = model(A[:, cut:], state=swapped)

    def patch(h, hook):
        h[:, cut - 1] = sb.layers[int(hook.name.split(".")[1])].h
        return h

    hooks = [(f"blocks.{l}.hook_ssm_state", patch) for l in swap]
    patched = model.run_with_hooks(A, fwd_hooks=hooks)
    torch.testing.assert_close(patched[:, cut:], cont)
    assert not torch.allclose(model(A)[:, cut:], cont)


def test_hook_edits_equal_sequential_overwrite():
    """Several overwrites in two layers (in place and returned); later states follow the recurrence."""
    model = _model("signed")
    tokens = _tokens(B=3, L=60)
    edits = [(0, 0, 5, 1, 3.0), (0, 2, 20, 4, -2.5), (0, 0, 33, 1, 0.25), (2, 1, 7, 0, 9.0), (2, 1, 8, 2, -9.0)]

    def editor(layer):
        def fn(h, hook):
            for (el, eb, et, es, val) in edits:
                if el == layer:
                    h[eb, et, es] = val
            return None if layer == 0 else h  # layer 0 edits in place and returns nothing

        return fn

    ref_logits, ref_states = _sequential_forward(model, tokens, edits)
    with model.hooks(fwd_hooks=[("blocks.0.hook_ssm_state", editor(0)), ("blocks.2.hook_ssm_state", editor(2))]):
        logits, state = model(tokens, return_state=True)
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
    torch.testing.assert_close(logits, ref_logits)
    assert not torch.allclose(logits, model(tokens))
    for l in range(3):
        # hook_z is φ = identity of the recomputed states, so it shows what flowed downstream
        torch.testing.assert_close(cache[f"blocks.{l}.hook_z"], ref_states[l])
        torch.testing.assert_close(state.layers[l].h, ref_states[l][:, -1])


def test_observing_hook_changes_nothing():
    model = _model()
    tokens = _tokens()
    seen = []
    out = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_ssm_state", lambda h, hook: seen.append(h))])
    torch.testing.assert_close(out, model(tokens))
    assert seen and seen[0].shape == (3, 40, 3)


def test_gate_hook_edit_reaches_states():
    model = _model()
    tokens = _tokens(B=1, L=20)

    def zero_gate(a, hook):
        a[:, 10] = 0.0
        return a

    _, cache = model.run_with_cache(tokens)
    with model.hooks(fwd_hooks=[("blocks.0.hook_a", zero_gate)]):
        _, c2 = model.run_with_cache(tokens)
    h, b = c2["blocks.0.hook_ssm_state"], c2["blocks.0.hook_b"]
    torch.testing.assert_close(h[:, 10], b[:, 10])  # gate 0 forgets everything before
    torch.testing.assert_close(h[:, :10], cache["blocks.0.hook_ssm_state"][:, :10])


def test_custom_layers_and_config_errors():
    cfg = DiagonalSSMConfig(d_vocab=4, d_state=[1], dtype="float64")
    counter = DiagonalLayer(1, gate=lambda u: torch.ones_like(u[..., :1]), inp=lambda u: u[..., 3:4] - u[..., 2:3])
    model = HookedDiagonalSSM(cfg, [counter], head=lambda r: r[..., 4:5].expand(-1, -1, 4))
    tokens = torch.tensor([[1, 3, 3, 2, 3, 3, 3]])
    _, cache = model.run_with_cache(tokens)
    assert cache["blocks.0.hook_ssm_state"][0, :, 0].tolist() == [0, 1, 2, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        DiagonalSSMConfig(d_vocab=4, d_state=[1], dtype="float16")
    with pytest.raises(ValueError):
        DiagonalSSMConfig(d_vocab=4, d_state=[1], gate="negative")
    with pytest.raises(ValueError):
        HookedDiagonalSSM(cfg, [counter, counter])


def test_config_round_trip_and_learning():
    cfg = DiagonalSSMConfig(d_vocab=5, d_state=[3, 2], gate="signed", alphabet=("0", "1"))
    assert DiagonalSSMConfig.from_dict(cfg.to_dict()) == cfg
    torch.manual_seed(0)
    model = HookedDiagonalSSM(cfg)
    tokens = torch.randint(3, 5, (4, 25))
    loss = model(tokens).pow(2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_add_mode_equals_loop_with_the_same_additions():
    """"add" (as HookedMamba's): the hook's difference is added at its step and carried forward."""
    model = _model("signed")
    tokens = _tokens(B=3, L=30)
    adds = {(0, 5): 0.7, (2, 20): -1.5, (0, 6): 0.25}

    def hook(layer):
        def fn(h, hook):
            h = h.clone()
            for (l, t), d in adds.items():
                if l == layer:
                    h[:, t, 1] += d
            return h
        return fn

    def step(l, t, h):
        if (l, t) in adds:
            h = h.clone()
            h[:, 1] += adds[(l, t)]
        return h

    ref_logits, ref_states = _sequential_forward(model, tokens, step=step)
    with model.state_edit_mode("add"):
        with model.hooks(fwd_hooks=[(f"blocks.{l}.hook_ssm_state", hook(l)) for l in (0, 2)]):
            logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
    assert model.ssm_state_edit == "overwrite"
    torch.testing.assert_close(logits, ref_logits)
    for l in range(3):
        torch.testing.assert_close(cache[f"blocks.{l}.hook_z"], ref_states[l])
    with pytest.raises(ValueError, match="state edit mode"):
        with model.state_edit_mode("replace"):
            pass


@pytest.mark.parametrize("mode", ["overwrite", "add"])
def test_gradients_through_an_edit_are_the_loop_total_derivatives(mode):
    """The gradient reaching a hook's returned state is the total derivative (HookedMamba's semantics):
    an overwrite by a differentiable value in layer 0 and an additive perturbation of every state of
    layer 1, against the same edits in the sequential loop, for every parameter and both leaves."""
    model = _model("signed")
    tokens = _tokens(B=2, L=16)
    v = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    eps = torch.zeros(2, 16, 3, dtype=torch.float64, requires_grad=True)

    def overwrite(h, hook):
        h = h.clone()
        h[:, 5, 2] = v * 2 if mode == "overwrite" else h[:, 5, 2] + v * 2
        return h

    hooks = [("blocks.0.hook_ssm_state", overwrite), ("blocks.1.hook_ssm_state", lambda h, hook: h + eps)]
    with model.state_edit_mode(mode), model.hooks(fwd_hooks=hooks):
        model(tokens).pow(2).sum().backward()
    got = [p.grad.clone() for p in model.parameters()] + [v.grad.clone(), eps.grad.clone()]
    model.zero_grad()
    v.grad = eps.grad = None

    def step(l, t, h):
        if l == 0 and t == 5:
            h = h.clone()
            h[:, 2] = v * 2 if mode == "overwrite" else h[:, 2] + v * 2
        return h + eps[:, t] if l == 1 else h

    ref, _ = _sequential_forward(model, tokens, step=step)
    ref.pow(2).sum().backward()
    for g, p in zip(got, list(model.parameters()) + [v, eps]):
        torch.testing.assert_close(g, p.grad)
