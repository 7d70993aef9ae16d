"""Edits of hook_ssm_state / hook_a against an independent step-by-step Mamba loop.

``loop_forward`` below re-implements HookedMamba one token at a time from the raw parameters (conv as
an explicit window, the gate formulas, RMSNorm), with an ``edit(layer, t, h) -> h`` callback applied
to the state right after step t: the definition of "the sequential loop with the overwrite".
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hooks import HookedMamba, MambaConfig


def _rms(x, w, eps):
    return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def loop_forward(model, tokens, edit=None, edit_a=None, record=None):
    """``record``: a dict that receives every layer's per-step states ``[B, L, E, N]``."""
    cfg = model.cfg
    E, N, R = cfg.d_inner, cfg.d_state, cfg.dt_rank
    Bs, L = tokens.shape
    resid = model.embed.weight[tokens]
    final_states = []
    for layer, block in enumerate(model.blocks):
        mx = block.mixer
        u = _rms(resid, block.norm.weight, cfg.norm_eps)
        xz = F.linear(u, mx.in_proj.weight, mx.in_proj.bias)
        xi, z = xz[..., :E], xz[..., E:]
        w = mx.conv1d.weight[:, 0, :]  # [E, K]
        window = xi.new_zeros(Bs, E, cfg.d_conv)
        h = xi.new_zeros(Bs, E, N)
        A = -torch.exp(mx.A_log)
        outs, hs = [], []
        for t in range(L):
            window = torch.cat([window[:, :, 1:], xi[:, t, :, None]], -1)
            c = (window * w).sum(-1) + (mx.conv1d.bias if mx.conv1d.bias is not None else 0)
            xc = F.silu(c)
            dbc = xc @ mx.x_proj.weight.T
            dt, Bt, Ct = dbc[:, :R], dbc[:, R : R + N], dbc[:, R + N :]
            delta = F.softplus(dt @ mx.dt_proj.weight.T + mx.dt_proj.bias)
            if cfg.gate == "nonnegative":
                a = torch.exp(delta[..., None] * A)
            elif cfg.gate == "signed":
                a = 2 * torch.exp(delta[..., None] * A) - 1
            else:
                a = torch.exp(A).expand(Bs, E, N)
            if edit_a is not None:
                a = edit_a(layer, t, a)
            h = a * h + delta[..., None] * Bt[:, None, :] * xc[..., None]
            if edit is not None:
                h = edit(layer, t, h)
            hs.append(h)
            y = (h * Ct[:, None, :]).sum(-1) + mx.D * xc
            outs.append(F.linear(y * F.silu(z[:, t]), mx.out_proj.weight, mx.out_proj.bias))
        resid = resid + torch.stack(outs, 1)
        final_states.append(h)
        if record is not None:
            record[layer] = torch.stack(hs, 1)
    logits = _rms(resid, model.norm_f.weight, cfg.norm_eps) @ model.lm_head.weight.T
    return logits[..., : cfg.vocab_size], final_states


def _model(gate="nonnegative", **kw):
    base = dict(d_model=12, n_layers=2, vocab_size=7, d_state=3, d_conv=3, expand=2, gate=gate)
    base.update(kw)
    m = HookedMamba(MambaConfig(**base), seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial D, norms, embeddings, and larger steps than at init
        m.embed.weight.normal_(generator=g)
        for block in m.blocks:
            block.mixer.D.normal_(generator=g)
            block.norm.weight.uniform_(0.5, 1.5, generator=g)
            block.mixer.dt_proj.bias.add_(1.0)
    return m


TOKS = torch.randint(0, 7, (2, 11), generator=torch.Generator().manual_seed(0))
G = torch.Generator().manual_seed(1)
V1, V2, V3 = (torch.randn(2, 24, 3, generator=G) for _ in range(3))


def _close(a, b, tol=1e-5):
    return float((a - b).abs().max().detach()) <= tol


def _grad_close(a, b, rel=1e-4):
    return float((a - b).abs().max()) <= rel * float(b.abs().max()) + 1e-7


@pytest.mark.parametrize("gate", ["nonnegative", "signed", "time_invariant"])
@pytest.mark.parametrize("scan", ["fast", "sequential"])
def test_plain_forward_equals_loop(gate, scan):
    m = _model(gate, scan=scan)
    with torch.no_grad():
        assert _close(m(TOKS), loop_forward(m, TOKS)[0])


@pytest.mark.parametrize("mode", ["overwrite", "add"])
@pytest.mark.parametrize("t", [0, 4, 10])
def test_single_position_edit_with_any_function_equals_loop(mode, t):
    m = _model()
    f = lambda h: torch.tanh(3 * h) - 0.5 * h.flip(-1) + 1.0  # noqa: E731 (state-dependent, nonlinear)

    def hook(h, hook):
        h = h.clone()
        h[:, t] = f(h[:, t])
        return h

    def edit(layer, s, h):
        return f(h) if (layer == 1 and s == t) else h

    ref, ref_states = loop_forward(m, TOKS, edit)
    with torch.no_grad(), m.state_edit_mode(mode):
        out, state = m.run_with_hooks(TOKS, fwd_hooks=[("blocks.1.mixer.hook_ssm_state", hook)], return_state=True)
    assert _close(out, ref) and _close(state.layers[1].ssm, ref_states[1])
    assert not _close(out, m(TOKS), 1e-3)


@pytest.mark.parametrize("gate", ["nonnegative", "signed", "time_invariant"])
def test_overwrite_at_several_positions_and_layers_equals_loop(gate):
    m = _model(gate)
    writes = {(0, 2): V1, (0, 7): V2, (1, 5): V3}

    def hook(h, hook):
        layer = int(hook.name.split(".")[1])
        h = h.clone()
        for (lay, t), v in writes.items():
            if lay == layer:
                h[:, t] = v
        return h

    def edit(layer, t, h):
        return writes.get((layer, t), h)

    ref, _ = loop_forward(m, TOKS, edit)
    with torch.no_grad():
        out = m.run_with_hooks(TOKS, fwd_hooks=[(lambda n: n.endswith("hook_ssm_state"), hook)])
    assert _close(out, ref)


def test_partial_element_overwrite_equals_loop():
    m = _model()
    mask = torch.zeros(24, 3, dtype=torch.bool)
    mask[::5, 1] = True  # a few (channel, state) entries only

    def hook(h, hook):
        h = h.clone()
        h[:, 3] = torch.where(mask, 7.0, h[:, 3])
        h[:, 8, 0, 0] = -2.0
        return h

    def edit(layer, t, h):
        if layer == 0 and t == 3:
            return torch.where(mask, torch.full_like(h, 7.0), h)
        if layer == 0 and t == 8:
            h = h.clone()
            h[:, 0, 0] = -2.0
        return h

    with torch.no_grad():
        out = m.run_with_hooks(TOKS, fwd_hooks=[("blocks.0.mixer.hook_ssm_state", hook)])
    assert _close(out, loop_forward(m, TOKS, edit)[0])


def test_add_mode_at_several_positions_equals_loop_with_the_same_additions():
    m = _model("signed")
    adds = {2: V1, 6: V2, 9: V3}

    def hook(h, hook):
        h = h.clone()
        for t, v in adds.items():
            h[:, t] += v
        return h

    def edit(layer, t, h):
        return h + adds[t] if (layer == 0 and t in adds) else h

    ref, _ = loop_forward(m, TOKS, edit)
    with torch.no_grad(), m.state_edit_mode("add"):
        out = m.run_with_hooks(TOKS, fwd_hooks=[("blocks.0.mixer.hook_ssm_state", hook)])
    assert _close(out, ref)
    with torch.no_grad():  # in overwrite mode the later writes use the pre-edit states: differs
        over = m.run_with_hooks(TOKS, fwd_hooks=[("blocks.0.mixer.hook_ssm_state", hook)])
    assert not _close(over, ref, 1e-4)


def test_in_place_edit_equals_functional_edit_and_keeps_gradients_upstream():
    m = _model()

    def functional(h, hook):
        h = h.clone()
        h[:, 4] = 0.0
        h[:, 9] = V1
        return h

    def in_place(h, hook):
        h[:, 4] = 0.0
        h[:, 9] = V1

    name = "blocks.0.mixer.hook_ssm_state"
    ref = m.run_with_hooks(TOKS, fwd_hooks=[(name, functional)])
    ref.pow(2).sum().backward()
    g_ref = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    out = m.run_with_hooks(TOKS, fwd_hooks=[(name, in_place)])
    assert _close(out, ref)
    out.pow(2).sum().backward()
    for p, g in zip(m.parameters(), g_ref):
        assert _grad_close(p.grad, g)


def test_no_op_hooks_change_nothing():
    m = _model()
    clean = m(TOKS)
    for hook in (lambda h, hook: h.clone(), lambda h, hook: None, lambda h, hook: h):
        with torch.no_grad():
            out = m.run_with_hooks(TOKS, fwd_hooks=[(lambda n: n.endswith("hook_ssm_state"), hook)])
        assert torch.equal(out, clean)
        # with autograd on, a returned tensor is routed through one more recurrence (rounding only)
        out = m.run_with_hooks(TOKS, fwd_hooks=[(lambda n: n.endswith("hook_ssm_state"), hook)])
        assert _close(out, clean, 1e-5)


def test_gradients_with_an_edit_equal_loop_gradients():
    m = _model()
    v = V2.clone().requires_grad_()

    def hook(h, hook):
        h = h.clone()
        h[:, 5] = v * 2
        return h

    out = m.run_with_hooks(TOKS, fwd_hooks=[("blocks.0.mixer.hook_ssm_state", hook)])
    out.pow(2).sum().backward()
    grads = [p.grad.clone() for p in m.parameters()] + [v.grad.clone()]
    m.zero_grad()
    v.grad = None
    ref, _ = loop_forward(m, TOKS, lambda layer, t, h: v * 2 if (layer == 0 and t == 5) else h)
    ref.pow(2).sum().backward()
    for g, p in zip(grads, list(m.parameters()) + [v]):
        assert _grad_close(g, p.grad)


def test_backward_hook_sees_the_total_derivative_of_the_state():
    m = _model()
    seen = {}

    def save(g, hook):
        seen["g"] = g.detach()

    with m.hooks(bwd_hooks=[("blocks.1.mixer.hook_ssm_state", save)]):
        m(TOKS).pow(2).sum().backward()
    # reference: d loss / d (an additive perturbation of h_t, carried by the loop)
    eps = torch.zeros(2, 11, 24, 3, requires_grad=True)
    ref, _ = loop_forward(m, TOKS, lambda layer, t, h: h + eps[:, t] if layer == 1 else h)
    ref.pow(2).sum().backward()
    assert _grad_close(seen["g"], eps.grad)


@pytest.mark.parametrize("gate", ["nonnegative", "signed"])
def test_hook_a_edit_equals_loop(gate):
    m = _model(gate)

    def hook(a, hook):
        a = a.clone()
        a[:, 3] = 0.0  # forget everything at step 3
        a[:, 6, :5] = -0.5
        return a

    def edit_a(layer, t, a):
        if layer != 1:
            return a
        a = a.clone()
        if t == 3:
            a[:] = 0.0
        if t == 6:
            a[:, :5] = -0.5
        return a

    with torch.no_grad():
        out = m.run_with_hooks(TOKS, fwd_hooks=[("blocks.1.mixer.hook_a", hook)])
        assert _close(out, loop_forward(m, TOKS, edit_a=edit_a)[0])


def test_interchange_by_hook_equals_interchange_by_state():
    """Patching h_t of another run at the last prefix position == continuing from the swapped state.

    One layer: with more, the hook's edit of h_t also changes the layer's output at t itself, which the
    next layer has already consumed when the state is swapped after position t."""
    m = _model(n_layers=1)
    a_toks, b_toks = TOKS[:1], TOKS[1:]
    t = 5
    _, sa = m(a_toks[:, : t + 1], return_state=True)
    _, sb = m(b_toks[:, : t + 1], return_state=True)
    patched = sa.clone()
    patched.layers[0].ssm = sb.layers[0].ssm
    via_state = m(a_toks[:, t + 1 :], patched)

    def hook(h, hook):
        h = h.clone()
        h[:, t] = sb.layers[0].ssm
        return h

    with torch.no_grad():
        via_hook = m.run_with_hooks(a_toks, fwd_hooks=[("blocks.0.mixer.hook_ssm_state", hook)])
    assert _close(via_hook[:, t + 1 :], via_state)


@pytest.mark.parametrize("gate", ["nonnegative", "time_invariant"])
def test_hook_a_in_place_edit_with_gradients(gate):
    m = _model(gate)

    def in_place(a, hook):
        a[:, 4] = 0.0

    def functional(a, hook):
        a = a.clone()
        a[:, 4] = 0.0
        return a

    outs, grads = [], []
    for hook in (in_place, functional):
        m.zero_grad()
        out = m.run_with_hooks(TOKS, fwd_hooks=[("blocks.0.mixer.hook_a", hook)])
        out.pow(2).sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in m.parameters()])
    assert _close(outs[0], outs[1], 0.0)
    for g_in_place, g_functional in zip(*grads):
        assert _grad_close(g_in_place, g_functional)
