"""hooks.scan and hooks.selective_scan: the fast recurrence / selective scan against the plain sequential
references."""
from __future__ import annotations

import pytest
import torch

from hooks import scan
from hooks.scan import (
    GATES,
    discretize,
    linear_recurrence,
    linear_recurrence_ref,
    readout,
)
from hooks.selective_scan import selective_scan, selective_scan_ref


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _scan_inputs(Bs, L, E, N, dtype=torch.float32, seed=0, dt_scale=0.5, grad=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(Bs, L, E, generator=g, dtype=dtype)
    delta = torch.rand(Bs, L, E, generator=g, dtype=dtype) * dt_scale
    A = -torch.rand(E, N, generator=g, dtype=dtype) * 3 - 0.05
    B = torch.randn(Bs, L, N, generator=g, dtype=dtype)
    C = torch.randn(Bs, L, N, generator=g, dtype=dtype)
    D = torch.randn(E, generator=g, dtype=dtype)
    h0 = torch.randn(Bs, E, N, generator=g, dtype=dtype)
    ts = [x, delta, A, B, C, D, h0]
    return [t.requires_grad_() for t in ts] if grad else ts


# ---------------------------------------------------------------- the recurrence alone


@pytest.mark.parametrize("with_h0", [False, True])
def test_linear_recurrence_matches_reference_at_4096(with_h0):
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 4096, 3, 4, generator=g) * 0.2 + 0.8  # long memory: errors would accumulate
    b = torch.randn(2, 4096, 3, 4, generator=g)
    h0 = torch.randn(2, 3, 4, generator=g) if with_h0 else None
    assert _rel(linear_recurrence(a, b, h0), linear_recurrence_ref(a, b, h0)) <= 1e-4


def test_linear_recurrence_closed_form_and_finite_at_100k():
    L = 100_000
    a = torch.full((1, L, 2), 0.999, requires_grad=True)
    b = torch.ones(1, L, 2, requires_grad=True)
    h = linear_recurrence(a, b)
    expected = (1 - 0.999**L) / (1 - 0.999)  # geometric series, ~1000
    assert torch.isfinite(h).all()
    assert float((h[0, -1].detach() - expected).abs().max()) < 1e-3 * expected
    h.sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


@pytest.mark.parametrize("with_h0", [False, True])
def test_linear_recurrence_gradients_match_reference(with_h0):
    g = torch.Generator().manual_seed(2)
    a0 = torch.rand(3, 50, 4, 2, generator=g) * 1.6 - 0.8  # signed decays too
    b0 = torch.randn(3, 50, 4, 2, generator=g)
    h00 = torch.randn(3, 4, 2, generator=g)
    w = torch.randn(3, 50, 4, 2, generator=g)
    grads = []
    for fn in (linear_recurrence, linear_recurrence_ref):
        a, b, h0 = (t.clone().requires_grad_() for t in (a0, b0, h00))
        (fn(a, b, h0 if with_h0 else None) * w).sum().backward()
        grads.append((a.grad, b.grad, h0.grad))
    for fast, ref in zip(*grads):
        if ref is None:
            assert fast is None
        else:
            assert _rel(fast, ref) <= 1e-5


def test_linear_recurrence_gradcheck_double():
    g = torch.Generator().manual_seed(3)
    a = (torch.rand(2, 6, 3, generator=g, dtype=torch.float64) * 1.8 - 0.9).requires_grad_()
    b = torch.randn(2, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(linear_recurrence, (a, b, h0))
    assert torch.autograd.gradcheck(linear_recurrence, (a[:, :1], b[:, :1], h0))  # L = 1
    assert torch.autograd.gradcheck(linear_recurrence, (a, b))


def test_linear_recurrence_broadcast_gate():
    g = torch.Generator().manual_seed(4)
    a = torch.rand(3, 2, generator=g)
    b = torch.randn(2, 9, 3, 2, generator=g)
    ref = linear_recurrence_ref(a.expand_as(b), b)
    assert _rel(linear_recurrence(a.expand(b.shape), b), ref) <= 1e-6


# ---------------------------------------------------------------- the selective scan


@pytest.mark.parametrize("gate", GATES)
def test_selective_scan_matches_reference_at_4096(gate):
    x, delta, A, B, C, D, h0 = _scan_inputs(1, 4096, 4, 3, dt_scale=0.05)
    y, h = selective_scan(x, delta, A, B, C, D, h0, gate=gate)
    y_ref, h_ref = selective_scan_ref(x, delta, A, B, C, D, h0, gate=gate)
    assert _rel(y, y_ref) <= 1e-4 and _rel(h, h_ref) <= 1e-4


@pytest.mark.parametrize("gate", GATES)
def test_selective_scan_finite_at_100k(gate):
    x, delta, A, B, C, D, _ = _scan_inputs(1, 100_000, 2, 2, dt_scale=0.02, seed=5, grad=True)
    y, h = selective_scan(x, delta, A, B, C, D, gate=gate)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    (y.sum() + h[:, -1].sum()).backward()
    for t in (x, delta, A, B, C, D):
        assert torch.isfinite(t.grad).all()


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("chunk", [1, 5, None])
def test_selective_scan_gradients_match_reference(gate, chunk):
    base = _scan_inputs(2, 37, 5, 3, seed=6)
    wy = torch.randn(2, 37, 5)
    wh = torch.randn(2, 37, 5, 3)
    results = []
    for use_fast in (True, False):
        ts = [t.clone().requires_grad_() for t in base]
        if use_fast:
            y, h = selective_scan(*ts, gate=gate, chunk=chunk)
        else:
            y, h = selective_scan_ref(*ts, gate=gate)
        ((y * wy).sum() + (h * wh).sum()).backward()  # gradients through both outputs
        results.append([y.detach(), h.detach()] + [t.grad for t in ts])
    for fast, ref in zip(*results):
        assert _rel(fast, ref) <= 1e-5


@pytest.mark.parametrize("gate", GATES)
def test_selective_scan_gradcheck_double(gate):
    ts = _scan_inputs(2, 7, 3, 2, dtype=torch.float64, seed=7, grad=True)
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, gate=gate, chunk=3), ts)
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, gate=gate)[0], ts[:5])  # no D, no h0


@pytest.mark.parametrize("gate", GATES)
def test_unfused_pieces_equal_fused_scan(gate):
    x, delta, A, B, C, D, h0 = _scan_inputs(2, 20, 4, 3, seed=8)
    a, b = discretize(x, delta, A, B, gate)
    h = linear_recurrence(a, b, h0)
    y, h_fused = selective_scan(x, delta, A, B, C, D, h0, gate=gate)
    assert _rel(h, h_fused) <= 1e-6 and _rel(readout(h, C, x, D), y) <= 1e-6


def test_gate_ranges():
    x, delta, A, B, *_ = _scan_inputs(2, 30, 4, 3, dt_scale=3.0, seed=9)
    a_nonneg, _ = discretize(x, delta, A, B, "nonnegative")
    a_signed, _ = discretize(x, delta, A, B, "signed")
    a_ti, _ = discretize(x, delta, A, B, "time_invariant")
    assert (a_nonneg > 0).all() and (a_nonneg <= 1).all()
    assert (a_signed > -1).all() and (a_signed < 1).all() and (a_signed < 0).any()
    assert (a_ti > 0).all() and (a_ti == a_ti[:1, :1]).all()  # the same at every (batch, pos)


def test_unknown_gate_raises():
    with pytest.raises(ValueError, match="unknown gate"):
        selective_scan(*_scan_inputs(1, 3, 2, 2)[:5], gate="complex")


def test_scan_threads_setting_is_restored_and_results_do_not_depend_on_it():
    ts = _scan_inputs(2, 40, 6, 3, seed=10, grad=True)
    before = torch.get_num_threads()
    old = scan.get_scan_threads()
    outs = []
    try:
        for n in (1, None):
            scan.set_scan_threads(n)
            y, h = selective_scan(*ts)
            y.sum().backward()
            outs.append([y.detach(), h.detach(), ts[0].grad.clone()])
            ts[0].grad = None
            assert torch.get_num_threads() == before
    finally:
        scan.set_scan_threads(old)
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError):
        scan.set_scan_threads(0)


def test_huge_page_buffers_are_ordinary_tensors():
    a = torch.rand(1, 300, 128, 128)  # 19 MB: above the huge-page threshold
    b = torch.randn(1, 300, 128, 128)
    h = linear_recurrence(a, b)
    scan.set_huge_pages(False)
    try:
        assert torch.equal(h, linear_recurrence(a, b))
    finally:
        scan.set_huge_pages(True)
