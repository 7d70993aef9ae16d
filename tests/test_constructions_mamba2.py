"""hooks.constructions.as_mamba2: flip-flop and Dyck(K, h) as hand-set HookedMamba2 weights.

The checks of the HookedMamba realizations (tests/test_constructions_mamba.py) at ten times the paper's
training lengths (float32): strict accuracy against the languages' allowed-next sets, the states against
the automaton, the state API, and the chunked scan against the sequential one on these extreme gates.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("languages")
pytest.importorskip("hooks.mamba2")

from hooks import metrics  # noqa: E402
from hooks.constructions import dyck_mamba2, flipflop_mamba2  # noqa: E402
from tests.test_constructions_mamba import _strict  # noqa: E402  (strict accuracy, logits, batch)


@pytest.fixture(scope="module")
def ff():
    return flipflop_mamba2()


@pytest.fixture(scope="module")
def dy():
    return dyck_mamba2(8, 10)


def test_architecture_is_a_plain_hooked_mamba2(ff, dy):
    from hooks.mamba2 import HookedMamba2

    for c, layers in ((ff, 1), (dy, 2)):
        assert type(c.model) is HookedMamba2 and c.model.cfg.n_layers == layers
        assert c.model.cfg.gate == "nonnegative" and c.model.cfg.headdim == 1
        assert c.state_hooks == [f"blocks.{l}.mixer.hook_ssm_state" for l in range(layers)]


def test_flipflop_mamba2_at_5120(ff):
    import languages

    for p in (0.8, 0.98):
        strings = languages.get("flipflop", p=p).sample(2, 5120, 5120, seed=1)
        acc, logits, batch = _strict(ff, strings)
        assert acc == 1.0
        assert float(logits[batch.mask].abs().min()) > 9.9


def test_dyck_mamba2_at_7000(dy):
    strings = dy.language.sample(2, 7000, 7000, seed=2)
    acc, logits, batch = _strict(dy, strings)
    assert acc == 1.0
    assert metrics.close_accuracy(logits, batch, dy.language) == 1.0
    assert float(logits[batch.mask].abs().min()) > 4.9  # margins: ±5 at the closest decision


def test_dyck_mamba2_other_sizes():
    for K, h in ((2, 3), (5, 4), (3, 12)):
        c = dyck_mamba2(K, h)
        assert _strict(c, c.language.sample(20, 2, 400, seed=K))[0] == 1.0


def test_mamba2_states_are_the_automaton(ff, dy):
    s = dy.language.sample(1, 3000, 3000, seed=3)[0]
    states = dy.states(dy.tokens([s]))
    tr = dy.language.trace(s, initial=True)
    opens = [o for o, _ in dy.language.pairs]
    assert dy.decoders["depth"](states)[0].tolist() == tr["depth"]
    assert dy.decoders["top"](states)[0].tolist() == [-1 if t is None else opens.index(t) for t in tr["top"]]
    s = ff.language.sample(1, 3000, 3000, seed=3)[0]
    stored = ff.decoders["stored"](ff.states(ff.tokens([s])))[0].tolist()
    want = [-1 if v is None else int(v) for v in ff.language.trace(s, initial=True)["stored"]]
    at_w = [False] + [ch == "w" for ch in s]  # position 0 is BOS
    assert [v for v, w in zip(stored, at_w) if not w] == [v for v, w in zip(want, at_w) if not w]
    assert all(v == -1 for v, w in zip(stored, at_w) if w)  # cleared at w, waiting for the bit


def test_mamba2_prefix_suffix_and_sequential_scan(dy):
    s = dy.language.sample(1, 900, 900, seed=5)[0]
    tokens = dy.tokens([s])
    with torch.no_grad():
        full = dy.model(tokens)
        a, st = dy.model(tokens[:, :301], return_state=True)
        b = dy.model(tokens[:, 301:], state=st)
        dy.model.cfg.scan = "sequential"
        try:
            seq = dy.model(tokens)
        finally:
            dy.model.cfg.scan = "chunked"
    torch.testing.assert_close(torch.cat([a, b], 1), full)
    assert float((seq - full).abs().max()) <= 1e-3 and torch.equal(seq > 0, full > 0)


def test_cli_mamba2(capsys):
    import json

    from hooks.constructions.__main__ import main

    assert main(["--language", "dyck", "--model", "mamba2", "--min-len", "600", "--max-len", "640",
                 "--n", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strict_accuracy"] == 1.0 and out["close_accuracy"] == 1.0 and out["model"] == "mamba2"
