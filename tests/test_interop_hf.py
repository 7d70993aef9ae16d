"""Hugging Face files: from_pretrained / save_pretrained / exports, checked against transformers'
own MambaForCausalLM on the same files (offline)."""
from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from hooks import HookedMamba, MambaConfig  # noqa: E402
from tests.test_mamba_hf import _hf_logits, _hf_model  # noqa: E402

TOKS = torch.randint(0, 11, (2, 15), generator=torch.Generator().manual_seed(0))
KW = dict(hidden_size=16, num_hidden_layers=2, state_size=4, expand=2, vocab_size=11)


def test_from_pretrained_reads_a_directory_written_by_transformers(tmp_path):
    hf = _hf_model(**KW)
    hf.save_pretrained(tmp_path / "hf")  # transformers' own layout (safetensors)
    ref = _hf_logits(hf, TOKS)
    for path in (tmp_path / "hf", str(tmp_path / "hf")):
        m = HookedMamba.from_pretrained(path)
        assert not m.training
        with torch.no_grad():
            assert float((m(TOKS) - ref).abs().max()) <= 1e-4
    m = HookedMamba.from_hf(str(tmp_path / "hf"))  # a path given to from_hf (was a TypeError)
    with torch.no_grad():
        assert float((m(TOKS) - ref).abs().max()) <= 1e-4


def test_from_pretrained_reads_a_bare_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    hf = _hf_model(seed=1, **KW)
    sd = {k: v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    save_file(sd, tmp_path / "weights.safetensors")
    m = HookedMamba.from_pretrained(tmp_path / "weights.safetensors")
    with torch.no_grad():
        assert float((m(TOKS) - _hf_logits(hf, TOKS)).abs().max()) <= 1e-4


def test_save_pretrained_is_read_by_transformers_and_back(tmp_path):
    m = HookedMamba(MambaConfig(d_model=12, n_layers=2, vocab_size=7, d_state=4, dt_min=0.01), seed=3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(4)) * 0.1)
    m.set_vocab("ab01")
    out = m.save_pretrained(tmp_path / "ours")
    assert sorted(x.name for x in out.iterdir()) == ["config.json", "model.safetensors"]
    assert oct(os.stat(out / "config.json").st_mode & 0o777) == "0o644"
    hf = transformers.MambaForCausalLM.from_pretrained(out).float().eval()
    toks = torch.randint(0, 7, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert float((_hf_logits(hf, toks) - m(toks)).abs().max()) <= 1e-4
    back = HookedMamba.from_pretrained(out)
    assert back.cfg.to_dict() == m.cfg.to_dict()  # dt_min etc. kept, not re-inferred
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), back.state_dict().values()))
    assert back.to_string(back.to_tokens(["ab10"])) == ["ab10"]


def test_clear_errors_for_hub_ids_pickles_and_other_gates(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="HF_HUB_OFFLINE=1"):
        HookedMamba.from_pretrained("state-spaces/mamba-130m-hf")

    import huggingface_hub

    def unreachable(*a, **k):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(OSError, match="offline mode"):
        HookedMamba.from_pretrained("state-spaces/mamba-130m-hf")
    with pytest.raises(FileNotFoundError, match="no such file"):
        HookedMamba.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / "pkl").mkdir()
    (tmp_path / "pkl" / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(FileNotFoundError, match="pickled weights are not loaded"):
        HookedMamba.from_pretrained(tmp_path / "pkl")
    signed = HookedMamba(MambaConfig(d_model=8, n_layers=1, vocab_size=5, gate="signed"), seed=0)
    with pytest.raises(ValueError, match="signed"):
        signed.save_pretrained(tmp_path / "signed")
    assert not (tmp_path / "signed" / "config.json").exists()


def _shipped_mamba():
    from trained_models.registry import SHIPPED, names

    out = []
    for n in names():
        card = json.loads((SHIPPED / n / "card.json").read_text())
        if card["model"]["family"] == "mamba" and card["model"]["config"]["gate"] == "nonnegative":
            out.append(n)
    return out


@pytest.mark.parametrize("name", _shipped_mamba())
def test_shipped_models_export_to_hf(name, tmp_path):
    from trained_models.export_hf import main
    from trained_models.registry import load

    assert main([name, str(tmp_path / name)]) == 0
    model, card = load(name)
    hf = transformers.MambaForCausalLM.from_pretrained(tmp_path / name).float().eval()
    back = HookedMamba.from_pretrained(tmp_path / name)
    strings = ["", model.vocab.alphabet[0] * 3 + model.vocab.alphabet[-1]]
    toks = back.to_tokens(strings)
    with torch.no_grad():
        ref = model(toks)
        assert float((_hf_logits(hf, toks)[..., : ref.shape[-1]] - ref).abs().max()) <= 1e-4
        assert torch.equal(back(toks), ref)


def test_export_refuses_models_without_an_hf_form(tmp_path, capsys):
    from trained_models.export_hf import main

    assert main(["parity-mamba-signed", str(tmp_path / "x")]) == 2
    assert "signed" in capsys.readouterr().err
    assert main(["flipflop-transformer", str(tmp_path / "y")]) == 2
    assert "Mamba models only" in capsys.readouterr().err
