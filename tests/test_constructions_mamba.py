"""hooks.constructions.as_mamba: flip-flop and Dyck(K, h) as hand-set HookedMamba weights.

Same checks as the diagonal constructions at ten times the paper's training lengths (float32), plus
their states against the automaton.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("languages")
pytest.importorskip("hooks.mamba")

from hooks import metrics  # noqa: E402
from hooks.constructions import batch_for, parity_nonnegative_witness  # noqa: E402
from hooks.constructions.as_mamba import dyck_mamba, flipflop_mamba  # noqa: E402


@pytest.fixture(scope="module")
def ff():
    return flipflop_mamba()


@pytest.fixture(scope="module")
def dy():
    return dyck_mamba(8, 10)


def _strict(c, strings):
    batch = batch_for(c.language, c.vocab, strings)
    with torch.no_grad():
        logits = c.model(batch.tokens)
    return metrics.strict_accuracy(logits, batch), logits, batch


def test_architecture_is_a_plain_hooked_mamba(ff, dy):
    from hooks.mamba import HookedMamba

    for c, layers in ((ff, 1), (dy, 2)):
        assert isinstance(c.model, HookedMamba) and c.model.cfg.n_layers == layers
        assert c.model.cfg.gate == "nonnegative"
        assert c.state_hooks == [f"blocks.{l}.mixer.hook_ssm_state" for l in range(layers)]


def test_flipflop_mamba_at_5120(ff):
    for p in (0.8, 0.98):
        import languages

        strings = languages.get("flipflop", p=p).sample(2, 5120, 5120, seed=1)
        acc, logits, _ = _strict(ff, strings)
        assert acc == 1.0
        assert torch.allclose(logits.abs(), torch.full_like(logits, 10.0), atol=1e-2)


def test_dyck_mamba_at_7000(dy):
    strings = dy.language.sample(2, 7000, 7000, seed=2)
    acc, logits, batch = _strict(dy, strings)
    assert acc == 1.0
    assert metrics.close_accuracy(logits, batch, dy.language) == 1.0


def test_dyck_mamba_other_sizes():
    for K, h in ((2, 3), (5, 4)):
        c = dyck_mamba(K, h)
        assert _strict(c, c.language.sample(20, 2, 200, seed=K))[0] == 1.0


def test_mamba_states_are_the_automaton(ff, dy):
    s = dy.language.sample(1, 3000, 3000, seed=3)[0]
    states = dy.states(dy.tokens([s]))
    tr = dy.language.trace(s, initial=True)
    opens = [o for o, _ in dy.language.pairs]
    assert dy.decoders["depth"](states)[0].tolist() == tr["depth"]
    assert dy.decoders["top"](states)[0].tolist() == [-1 if t is None else opens.index(t) for t in tr["top"]]
    s = ff.language.sample(1, 3000, 3000, seed=3)[0]
    stored = ff.decoders["stored"](ff.states(ff.tokens([s])))[0].tolist()
    assert stored == [-1 if v is None else int(v) for v in ff.language.trace(s, initial=True)["stored"]]


def test_mamba_prefix_suffix_and_witness(ff):
    s = ff.language.sample(1, 400, 400, seed=5)[0]
    tokens = ff.tokens([s])
    full = ff.model(tokens)
    a, st = ff.model(tokens[:, :151], return_state=True)
    b = ff.model(tokens[:, 151:], state=st)
    torch.testing.assert_close(torch.cat([a, b], 1), full)
    w = parity_nonnegative_witness(ff, 500, token=ff.vocab.encode("i")[0])
    assert w.all_constant


def test_cli_mamba(capsys):
    import json

    from hooks.constructions.__main__ import main

    assert main(["--language", "flipflop", "--model", "mamba", "--min-len", "600", "--max-len", "640",
                 "--n", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strict_accuracy"] == 1.0 and out["model"] == "mamba"
    assert main(["--language", "anbn", "--model", "mamba", "--min-len", "4", "--max-len", "8"]) == 2
    assert "--model mamba exists for flipflop and dyck only" in capsys.readouterr().err
