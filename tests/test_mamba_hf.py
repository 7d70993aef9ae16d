"""Interop with Hugging Face ``transformers.MambaForCausalLM`` (offline, random weights, float32)."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from hooks import HookedMamba, MambaConfig  # noqa: E402

CONFIGS = [
    dict(hidden_size=16, num_hidden_layers=1, state_size=4, expand=2, vocab_size=11),
    dict(hidden_size=32, num_hidden_layers=2, state_size=16, expand=1, vocab_size=20, conv_kernel=3),
    dict(
        hidden_size=24, num_hidden_layers=3, state_size=8, expand=3, vocab_size=13, time_step_rank=5,
        use_bias=True, use_conv_bias=False, tie_word_embeddings=False, layer_norm_epsilon=1e-4,
    ),
]


def _hf_model(seed=0, **kw):
    torch.manual_seed(seed)
    hf = transformers.MambaForCausalLM(transformers.MambaConfig(**kw, use_mambapy=False)).float().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # move every parameter off its special init (D = 1, norms = 1, ...)
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return hf


def _hf_logits(hf, toks):
    with torch.no_grad():
        return hf(toks, use_cache=False).logits


@pytest.mark.parametrize("kw", CONFIGS, ids=["1L-N4-x2", "2L-N16-x1-K3", "3L-N8-x3-bias-untied"])
def test_logits_equal_hf(kw):
    hf = _hf_model(**kw)
    m = HookedMamba.from_hf(hf)
    assert m.cfg.n_layers == kw["num_hidden_layers"] and m.cfg.d_state == kw["state_size"]
    assert m.cfg.tie_embeddings == kw.get("tie_word_embeddings", True)
    toks = torch.randint(0, kw["vocab_size"], (3, 33), generator=torch.Generator().manual_seed(1))
    ref = _hf_logits(hf, toks)
    with torch.no_grad():
        out = m(toks)
    assert ref.abs().max() > 0.5  # a non-trivial comparison
    assert float((out - ref).abs().max()) <= 1e-4


def test_mamba_ssm_naming_and_bare_backbone_state_dicts():
    kw = CONFIGS[1]
    hf = _hf_model(seed=2, **kw)
    toks = torch.randint(0, kw["vocab_size"], (2, 17), generator=torch.Generator().manual_seed(3))
    ref = _hf_logits(hf, toks)
    sd = hf.state_dict()
    mamba_ssm_sd = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in sd.items()}
    backbone_only = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    for variant in (mamba_ssm_sd, backbone_only):
        m = HookedMamba.from_hf(variant)
        with torch.no_grad():
            assert float((m(toks) - ref).abs().max()) <= 1e-4


@pytest.mark.parametrize("cfg", [dict(tie_embeddings=True), dict(tie_embeddings=False, bias=True, d_conv=2)])
def test_to_hf_round_trip(cfg):
    m = HookedMamba(MambaConfig(d_model=20, n_layers=2, vocab_size=10, d_state=6, **cfg), seed=5)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(6)) * 0.1)
    hf = m.to_hf()
    assert isinstance(hf, transformers.MambaForCausalLM) and not hf.config.use_mambapy
    toks = torch.randint(0, 10, (2, 19), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert float((_hf_logits(hf, toks) - m(toks)).abs().max()) <= 1e-4
    back = HookedMamba.from_hf(hf)
    assert back.cfg.to_dict() == m.cfg.to_dict()
    for (k, v), w in zip(m.state_dict().items(), back.state_dict().values()):
        assert torch.equal(v, w), k


def test_to_hf_rejects_other_gates_and_from_hf_rejects_foreign_checkpoints():
    m = HookedMamba(MambaConfig(d_model=8, n_layers=1, vocab_size=5, gate="signed"), seed=0)
    with pytest.raises(ValueError, match="signed"):
        m.to_hf()
    sd = _hf_model(**CONFIGS[0]).state_dict()
    sd["backbone.layers.0.mixer.dt_bias"] = torch.zeros(32)  # a Mamba-2 parameter
    with pytest.raises(ValueError, match="dt_bias"):
        HookedMamba.from_hf(sd)
    with pytest.raises(TypeError):
        HookedMamba.from_hf(42)
