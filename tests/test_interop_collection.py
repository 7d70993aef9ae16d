"""Saved collections are self-describing and readable with numpy or safetensors alone."""
from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
import torch

import languages
from probe.collect import Collection, collect
from trained_models.registry import SHIPPED, load

SITES = ["blocks.0.mixer.hook_ssm_state", "blocks.1.hook_resid_post"]


@pytest.fixture(scope="module")
def coll():
    model, card = load("dyck1-mamba")
    lang = languages.get(card["language"]["name"], **card["language"]["params"])
    strings = list(lang.sample(n=6, min_len=4, max_len=12, seed=0))
    return model, lang, strings, collect(model, lang, strings, SITES, list(lang.state_variables), positions=30)


def _check_against_model(model, strings, arrays, c):
    """The saved activations, in their original shape, are the model's at (seq_id, pos)."""
    tokens = model.to_tokens(strings)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    for site in SITES:
        ref = cache[site][torch.as_tensor(c.seq_id), torch.as_tensor(c.pos)].numpy()
        assert arrays[f"acts/{site}"].shape == ref.shape
        np.testing.assert_allclose(arrays[f"acts/{site}"], ref, rtol=1e-6, atol=1e-6)


def test_npz_is_self_describing_with_numpy_alone(coll, tmp_path):
    model, lang, strings, c = coll
    c.save(tmp_path / "c.npz")
    z = np.load(tmp_path / "c.npz", allow_pickle=False)
    header = json.loads(str(z["header"]))
    E, N = model.cfg.d_inner, model.cfg.d_state
    assert z["acts/blocks.0.mixer.hook_ssm_state"].shape == (len(c), E, N)
    assert header["site_shapes"]["blocks.0.mixer.hook_ssm_state"] == [E, N]
    _check_against_model(model, strings, z, c)
    assert set(c.labels) == {"counter[0]", "depth", "phase"}
    for v in c.labels:
        np.testing.assert_array_equal(z[f"labels/{v}"], c.labels[v])
    assert header["strings"] == strings and header["kinds"] == c.kinds
    meta = header["meta"]
    assert meta["language"] == lang.name and meta["language_params"] == lang.params
    assert meta["model"]["name"] == "dyck1-mamba"
    assert meta["model"]["card_sha256"] == hashlib.sha256((SHIPPED / "dyck1-mamba" / "card.json").read_bytes()).hexdigest()
    assert meta["model"]["config"]["d_state"] == N
    back = Collection.load(tmp_path / "c.npz")
    for site in SITES:
        np.testing.assert_array_equal(back.acts[site], c.acts[site])
    assert back.site_shapes == c.site_shapes and back.meta == json.loads(json.dumps(c.meta))


def test_safetensors_is_self_describing_with_safetensors_alone(coll, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    model, lang, strings, c = coll
    c.save(tmp_path / "c.safetensors")
    arrays = load_file(str(tmp_path / "c.safetensors"))
    with safe_open(str(tmp_path / "c.safetensors"), framework="numpy") as f:
        header = json.loads(f.metadata()["header"])
    _check_against_model(model, strings, arrays, c)
    assert header["meta"]["language_params"] == lang.params and header["strings"] == strings
    back = Collection.load(tmp_path / "c.safetensors")
    for v in c.labels:
        np.testing.assert_array_equal(back.labels[v], c.labels[v])
    assert back.classes == c.classes
    with pytest.raises(ValueError, match=r"\.npz or \.safetensors"):
        c.save(tmp_path / "c.pkl")


def test_files_of_the_first_format_still_load(coll, tmp_path):
    _, _, _, c = coll
    header = {"format": "automata_lens.probe.Collection/1", "sites": ["s"], "variables": ["depth"],
              "kinds": {"depth": "numeric"}, "classes": {}, "alphabet": ["(", ")"], "vocab_size": 5,
              "symbol_ids": [3, 4], "meta": {}}
    np.savez(tmp_path / "old.npz", header=np.array(json.dumps(header)), act_0=np.ones((2, 3), np.float32),
             label_0=np.array([0.0, 1.0]), seq_id=np.zeros(2, np.int64), pos=np.arange(2), token=np.array([1, 3]),
             length=np.array([1, 1]), strings=np.array(["("]))
    old = Collection.load(tmp_path / "old.npz")
    assert old.acts["s"].shape == (2, 3) and old.strings == ["("] and old.site_shape("s") == (3,)


def test_to_pandas_and_to_xarray(coll, monkeypatch):
    model, lang, strings, c = coll
    df = c.to_pandas()
    assert len(df) == len(c) and list(df.columns[:4]) == ["seq_id", "pos", "token", "length"]
    tr = {i: lang.trace(s, initial=True) for i, s in enumerate(strings)}
    for row in df.itertuples():  # decoded labels are the automaton's values at that position
        assert row.depth == tr[row.seq_id]["depth"][row.pos]
        assert row.phase == tr[row.seq_id]["phase"][row.pos]
    wide = c.to_pandas(sites=["blocks.0.mixer.hook_ssm_state"])
    E, N = model.cfg.d_inner, model.cfg.d_state
    assert wide.shape[1] == df.shape[1] + E * N and f"blocks.0.mixer.hook_ssm_state[{E - 1},{N - 1}]" in wide
    np.testing.assert_array_equal(wide.iloc[:, df.shape[1]:].to_numpy(), c.acts["blocks.0.mixer.hook_ssm_state"])
    ds = c.to_xarray()
    assert ds["blocks.0.mixer.hook_ssm_state"].shape == (len(c), E, N)
    np.testing.assert_array_equal(ds["blocks.0.mixer.hook_ssm_state"].values.reshape(len(c), -1),
                                  c.acts["blocks.0.mixer.hook_ssm_state"])
    np.testing.assert_array_equal(ds["depth"].values, c.labels["depth"])
    assert json.loads(ds.attrs["meta"])["model"]["name"] == "dyck1-mamba"
    monkeypatch.setitem(sys.modules, "xarray", None)
    with pytest.raises(ImportError, match="needs xarray"):
        c.to_xarray()
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="needs pandas"):
        c.to_pandas()
