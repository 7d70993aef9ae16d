"""hooks.constructions against the ground truth of ``languages`` (allowed_next, trace).

Lengths are ten times the paper's training lengths: Dyck(8,10) at 7,000, flip-flop at
5,120, a^n b^n at n = 1,000, Dyck-1 at 1,500, signed parity at 10,000; a few strings each. All run
in float32: every counter here is an exact small integer (float32 is exact below 2**24), the sign bit
of parity is exactly ±1, and the flip-flop channel's thresholds have a 1/3 margin at any length.
"""
from __future__ import annotations

import json

import pytest
import torch

languages = pytest.importorskip("languages")

from hooks import metrics  # noqa: E402
from hooks.constructions import (  # noqa: E402
    LANGUAGES,
    Construction,
    batch_for,
    build,
    counter,
    dyck,
    flipflop,
    parity_nonnegative_witness,
    parity_signed,
)
from hooks.constructions.__main__ import main as cli_main  # noqa: E402


def _strict(c: Construction, strings, *, check_readout=True) -> float:
    """Strict accuracy of the model's logits; also checks that the logits decode to the readout's sets."""
    batch = batch_for(c.language, c.vocab, strings)
    with torch.no_grad():
        logits = c.model(batch.tokens)
    if check_readout:
        sets = c.readout(c.states(batch.tokens))
        assert torch.equal(metrics.allowed_from_logits(logits, c.vocab), sets)
    return metrics.strict_accuracy(logits, batch)


def _reference_allowed(language, s):
    """Per position, the allowed set as a set of symbols (END included), from allowed_next."""
    return [set(a) for a in language.allowed_next(s)]


# --------------------------------------------------------------------------- strict accuracy, long
@pytest.mark.parametrize(
    "make, window, n",
    [
        (lambda: dyck(8, 10), (7000, 7000), 3),
        (lambda: flipflop(0.8), (5120, 5120), 3),
        (lambda: flipflop(0.98), (5120, 5120), 2),
        (lambda: counter("anbn"), (2000, 2000), 1),  # n = 1,000
        (lambda: counter("dyck1"), (1500, 1500), 3),
        (lambda: parity_signed(), (10000, 10000), 3),
    ],
    ids=["dyck8-10@7000", "flipflop0.8@5120", "flipflop0.98@5120", "anbn@n1000", "dyck1@1500", "parity@10000"],
)
def test_strict_accuracy_at_ten_times_training_length(make, window, n):
    c = make()
    strings = c.language.sample(n, *window, seed=7)
    assert all(window[0] <= len(s) <= window[1] for s in strings)
    assert _strict(c, strings) == 1.0


@pytest.mark.parametrize(
    "name, window, n",
    [("shuffle2", (1000, 1000), 2), ("shuffle4", (1000, 1000), 2), ("shuffle6", (1000, 1000), 2),
     ("anbncn", (1500, 1500), 1), ("anbncndn", (2000, 2000), 1)],
)
def test_other_counters_strict_accuracy(name, window, n):
    c = counter(name)
    assert _strict(c, c.language.sample(n, *window, seed=3)) == 1.0


@pytest.mark.parametrize("name", LANGUAGES)
def test_every_construction_on_short_strings(name):
    """Every position of many short strings, including the shortest members and the empty prefix."""
    c = build(name, K=3, h=4) if name == "dyck" else build(name)
    if name in ("anbn", "anbncn", "anbncndn"):  # one member per length n*k: n = 1..30
        strings = c.language.sample(30, 1, 30 * len(c.language.alphabet), seed=11)
    else:
        strings = c.language.sample(60, 1, 40, seed=11)
    assert _strict(c, strings) == 1.0
    # and per position against allowed_next directly (not through the metric)
    s = strings[0]
    tokens = c.tokens([s])
    sets = c.readout(c.states(tokens))[0]
    vocab = c.vocab
    for i, ref in enumerate(_reference_allowed(c.language, s)):
        got = {sym for sym in c.language.alphabet if sets[i, vocab.encode(sym)[0]]}
        if sets[i, 2]:
            got.add(languages.END)
        assert got == ref, (s, i)


def test_dyck_small_and_non_power_of_two_K():
    for K, h in [(1, 3), (3, 2), (5, 6)]:
        c = dyck(K, h)
        assert c.state_sizes == (1, h * max(1, (K - 1).bit_length()))
        assert _strict(c, c.language.sample(30, 2, 60, seed=K)) == 1.0


def test_float64_gives_the_same_sets():
    for make in (lambda dt: dyck(8, 10, dtype=dt), lambda dt: counter("shuffle4", dtype=dt),
                 lambda dt: flipflop(dtype=dt)):
        c32, c64 = make("float32"), make("float64")
        assert c64.model.cfg.dtype == "float64"
        tokens = c32.tokens(c32.language.sample(4, 100, 300, seed=5))
        with torch.no_grad():
            assert torch.equal(c32.model(tokens), c64.model(tokens).float())


# --------------------------------------------------------------------------- states = automaton
def test_dyck_states_are_depth_and_top():
    c = dyck(8, 10)
    strings = c.language.sample(3, 2000, 3000, seed=2)
    tokens = c.tokens(strings)
    states = c.states(tokens)
    opens = [o for o, _ in c.language.pairs]
    depth, top = c.decoders["depth"](states), c.decoders["top"](states)
    for b, s in enumerate(strings):
        tr = c.language.trace(s, initial=True)
        n = len(s) + 1
        ref_depth = torch.tensor(tr["depth"], dtype=states[0].dtype)
        assert torch.equal(states[0][b, :n, 0], ref_depth)  # the raw layer-0 state is the depth
        ref_top = [-1 if t is None else opens.index(t) for t in tr["top"]]
        assert top[b, :n].tolist() == ref_top
        assert depth[b, :n].tolist() == tr["depth"]
        # the block at the current depth holds the binary code of the top bracket
        blocks = states[1][b, :n].reshape(n, 10, 3)
        for i in range(0, n, 97):
            if tr["depth"][i] > 0:
                bits = blocks[i, tr["depth"][i] - 1]
                assert sum(int(v) << j for j, v in enumerate(bits.tolist())) == ref_top[i]


def test_flipflop_memory_is_stored_bit():
    c = flipflop()
    strings = c.language.sample(3, 1000, 2000, seed=4)
    states = c.states(c.tokens(strings))
    mem = states[1][..., 0]
    for b, s in enumerate(strings):
        tr = c.language.trace(s, initial=True)
        code = {None: 0.0, "0": -1.0, "1": 1.0, 0: -1.0, 1: 1.0}
        ref = torch.tensor([code[v] for v in tr["stored"]], dtype=mem.dtype)
        assert torch.equal(mem[b, : len(s) + 1], ref)


def test_counter_states_are_counts():
    c = counter("shuffle4")
    strings = c.language.sample(2, 300, 400, seed=1)
    states = c.states(c.tokens(strings))
    for b, s in enumerate(strings):
        # independent recount: open minus close per pair, prefix by prefix
        ref = []
        counts = [0] * 4
        ref.append(tuple(counts))
        pairs = c.language.pairs if getattr(c.language, "pairs", None) else None
        for ch in s:
            for k, (o, cl) in enumerate(pairs):
                counts[k] += (ch == o) - (ch == cl)
            ref.append(tuple(counts))
        assert [tuple(int(v) for v in row) for row in states[0][b, : len(s) + 1].tolist()] == ref


# --------------------------------------------------------------------------- witness
def test_witness_nonnegative_constructions_settle():
    w = parity_nonnegative_witness(flipflop(), 400, token="i")
    assert w.all_constant and w.layers[0].constant_from < 100
    assert w.logits_constant_from is not None
    assert "constant from step" in str(w)
    # a gate-1 counter is non-negative too, but unbounded: it settles only at the end of the float's
    # integer range (2**24 steps in float32), so within T steps the witness rightly finds no tail
    w = parity_nonnegative_witness(counter("anbn"), 400, token="b")
    assert [l.constant for l in w.layers] == [False]


def test_witness_learned_nonnegative_diagonal_settles():
    from hooks.diagonal import DiagonalSSMConfig, HookedDiagonalSSM

    torch.manual_seed(0)
    m = HookedDiagonalSSM(DiagonalSSMConfig(d_vocab=5, d_state=[8, 8], alphabet=("0", "1")))
    w = parity_nonnegative_witness(m, 3000)
    assert w.all_constant and w.logits_constant_from is not None


def test_witness_parity_signed_never_settles():
    w = parity_nonnegative_witness(parity_signed(), 3000)
    assert not w.all_constant and w.layers[0].constant_from is None
    assert w.logits_constant_from is None
    assert "no constant tail" in str(w)


def test_witness_on_hooked_mamba():
    """A (random-init) HookedMamba: non-negative gates, so every layer settles. Larger steps Δ than
    the default init make it settle within a few hundred steps instead of ~10,000."""
    mamba = pytest.importorskip("hooks.mamba")
    cfg = mamba.MambaConfig(d_model=16, n_layers=2, vocab_size=5, d_state=4, dt_min=0.1, dt_max=1.0)
    model = mamba.HookedMamba(cfg, seed=0)
    w = parity_nonnegative_witness(model, 3000, token=4)  # id of '1' in Vocab(('0', '1'))
    assert [l.hook for l in w.layers] == ["blocks.0.mixer.hook_ssm_state", "blocks.1.mixer.hook_ssm_state"]
    assert w.all_constant and w.logits_constant_from is not None
    with pytest.raises(ValueError, match="int id"):
        parity_nonnegative_witness(model, 10, token="1")  # HookedMamba carries no alphabet


# --------------------------------------------------------------------------- state API and hooks
@pytest.mark.parametrize("name", ["dyck", "flipflop", "anbncn", "parity"])
def test_construction_prefix_suffix_state(name):
    c = build(name)
    s = c.language.sample(1, 200, 300, seed=9)[0]
    tokens = c.tokens([s])
    full = c.model(tokens)
    for cut in (1, 2, 101):
        a, st = c.model(tokens[:, :cut], return_state=True)
        b = c.model(tokens[:, cut:], state=st)
        assert torch.equal(torch.cat([a, b], 1), full)


def test_dyck_depth_edit_is_carried_forward():
    """Overwriting the depth at one step shifts every later depth (sequential-loop semantics), and the
    predictions follow the edited depth."""
    c = dyck(4, 6)
    s = c.language.sample(1, 200, 200, seed=1)[0]
    tokens = c.tokens([s])
    t0 = 50
    depth = torch.tensor(c.language.trace(s, initial=True)["depth"], dtype=torch.float32)

    def bump(h, hook):
        h[0, t0, 0] += 1.0
        return h

    with c.model.hooks(fwd_hooks=[("blocks.0.hook_ssm_state", bump)]):
        logits = c.model(tokens)
        _, cache = c.model.run_with_cache(tokens, names_filter=lambda n: n == "blocks.0.hook_z")
    got = cache["blocks.0.hook_z"][0, :, 0]
    assert torch.equal(got[:t0], depth[:t0]) and torch.equal(got[t0:], depth[t0:] + 1)
    allowed = metrics.allowed_from_logits(logits)[0]
    # END is predicted exactly where the edited depth is 0: never after t0 (true depth >= 0)
    assert not allowed[t0:, 2].any()
    assert torch.equal(allowed[:t0, 2], depth[:t0] == 0)


def test_flipflop_memory_interchange():
    """Swapping the memory layer's state flips the next read, as the automaton's counterfactual says."""
    c = flipflop()
    s1 = "w0i1i0"
    s2 = "w1i0i1"
    _, st1 = c.model(c.tokens([s1]), return_state=True)
    _, st2 = c.model(c.tokens([s2]), return_state=True)
    st1.layers[1] = st2.layers[1]
    cont = c.model(torch.tensor([c.vocab.encode("r")]), state=st1)
    allowed = metrics.allowed_from_logits(cont)[0, -1]
    assert allowed[c.vocab.encode("1")[0]] and not allowed[c.vocab.encode("0")[0]]


# --------------------------------------------------------------------------- metrics and CLI
def test_metrics_detect_errors():
    c = dyck(8, 10)
    strings = c.language.sample(4, 50, 80, seed=0)
    batch = batch_for(c.language, c.vocab, strings)
    logits = c.model(batch.tokens)
    assert metrics.strict_accuracy(logits, batch) == 1.0
    assert metrics.close_accuracy(logits, batch, c.language) == 1.0
    bad = logits.clone()
    bad[1, 5, 2] *= -1  # flip END at one position of string 1
    assert metrics.strict_accuracy(bad, batch) == 0.75
    # spread the closing mass evenly at one non-empty-stack position of string 0: close accuracy drops
    close_ids = [c.vocab.encode(cl)[0] for _, cl in c.language.pairs]
    depth = c.language.trace(strings[0], initial=True)["depth"]
    t = next(i for i, d in enumerate(depth) if d > 0)
    bad2 = logits.clone()
    bad2[0, t, close_ids] = 10.0
    correct, total = metrics.close_accuracy_counts(bad2, batch, c.language)
    assert total == int(sum((torch.tensor(c.language.trace(s, initial=True)["depth"]) > 0).sum() for s in strings))
    assert correct == total - 1
    pad_bos = metrics.allowed_from_logits(torch.full((1, 2, c.vocab.size), 10.0))
    assert not pad_bos[..., :2].any() and pad_bos[..., 2:].all()


def test_cli_json(capsys):
    assert cli_main(["--language", "dyck", "--K", "8", "--h", "10", "--min-len", "701", "--max-len", "760",
                     "--n", "4", "--seed", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strict_accuracy"] == 1.0 and out["close_accuracy"] == 1.0
    assert (out["n"], out["min_len"], out["max_len"]) == (4, 701, 760)
    assert cli_main(["--language", "parity", "--min-len", "10", "--max-len", "20", "--n", "5", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "strict accuracy 1.0000" in text and "close" not in text
