"""probe.collect / Collection on a toy HookedRootModule whose hooks are exact prefix functions."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from _probe_toys import CountingModel, ToyLanguage, ToyVocab, expected_counts
from probe import Collection, collect, layer_of, sites_matching
from probe.collect import collect_reference

SITES = ["blocks.0.hook_counts", "blocks.1.hook_pair"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")

VARS = ["n_a", "last", "pair", "state", "parity_b"]


@pytest.fixture(scope="module")
def setup():
    lang, vocab, model = ToyLanguage(), ToyVocab(), CountingModel()
    strings = lang.sample(23, 0, 17, seed=3)
    return lang, vocab, model, strings


def _check_alignment(c: Collection, strings, vocab):
    """Every row's activations and labels recomputed from (string, position)."""
    for k in range(len(c)):
        s, p = strings[c.seq_id[k]], int(c.pos[k])
        cnt = expected_counts(s, p, vocab)
        np.testing.assert_array_equal(c.acts["blocks.0.hook_counts"][k], cnt)
        np.testing.assert_array_equal(c.acts["blocks.1.hook_pair"][k], np.concatenate([cnt, 2 * cnt + p]))
        assert c.token[k] == (vocab.BOS if p == 0 else 3 + vocab.alphabet.index(s[p - 1]))
        assert c.length[k] == len(s)
        assert c.labels["n_a"][k] == s[:p].count("a")
        assert c.classes["last"][c.labels["last"][k]] == (s[p - 1] if p else None)
        assert c.labels["pair[0]"][k] == s[:p].count("a")
        assert c.labels["pair[1]"][k] == s[:p].count("b")
        assert c.classes["state"][c.labels["state"][k]] == s[:p].count("a") % 3
        assert c.classes["parity_b"][c.labels["parity_b"][k]] == (s[:p].count("b") % 2 == 1)


def test_all_positions_are_aligned_with_the_trace(setup):
    lang, vocab, model, strings = setup
    c = collect(model, lang, strings, SITES, VARS, positions="all", batch_size=4, vocab=vocab)
    assert len(c) == sum(len(s) + 1 for s in strings)
    assert c.acts["blocks.1.hook_pair"].shape == (len(c), 2 * vocab.size)  # [B, L, 2, V] flattened
    assert c.kinds == {"n_a": "numeric", "last": "categorical", "pair[0]": "numeric",
                       "pair[1]": "numeric", "state": "categorical", "parity_b": "categorical"}
    assert c.classes["last"] == ["a", "b", "c", None]  # None (position 0) is its own class, last
    assert c.classes["state"] == [0, 1, 2]
    # sorted by (seq_id, pos), every (sequence, position) exactly once
    expect = [(i, p) for i, s in enumerate(strings) for p in range(len(s) + 1)]
    assert list(zip(c.seq_id.tolist(), c.pos.tolist())) == expect
    _check_alignment(c, strings, vocab)


def _assert_same_collection(fast: Collection, slow: Collection, exact: bool = True) -> None:
    """Row for row the same kept set, tokens, labels (decoded) and activations."""
    for name in ("seq_id", "pos", "token", "length"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
    assert fast.kinds == slow.kinds and fast.classes == slow.classes
    for v in slow.labels:
        np.testing.assert_array_equal(fast.labels[v], slow.labels[v], err_msg=v)
    assert list(fast.acts) == list(slow.acts)
    for site, ref in slow.acts.items():
        assert fast.acts[site].dtype == ref.dtype and fast.acts[site].shape == ref.shape, site
        if exact:
            np.testing.assert_array_equal(fast.acts[site], ref, err_msg=site)
        else:
            np.testing.assert_allclose(fast.acts[site], ref, rtol=1e-5, atol=1e-6, err_msg=site)


def _every_third(s, trace):
    return range(len(s), -1, -3)  # unsorted, from the end: collect sorts


@pytest.mark.parametrize("positions", ["all", 37, 0, 10**6, _every_third],
                         ids=["all", "k", "zero", "k>total", "callable"])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batched_path_equals_the_per_string_reference(setup, positions, batch_size):
    lang, vocab, model, strings = setup
    strings = strings + ["", "c"]  # empty strings: only the BOS position
    fast = collect(model, lang, strings, SITES, VARS, positions=positions, seed=5, batch_size=batch_size,
                   vocab=vocab)
    slow = collect_reference(model, lang, strings, SITES, VARS, positions=positions, seed=5, vocab=vocab)
    _assert_same_collection(fast, slow)
    if positions != 0:
        assert len(slow) > 0
    _check_alignment(slow, strings, vocab)  # the reference itself, recomputed from the strings


def test_reference_equivalence_float16_and_trace_chosen_positions(setup):
    lang, vocab, model, strings = setup
    pick_a = lambda s, tr: [i for i, v in enumerate(tr["last"]) if v == "a"]  # noqa: E731
    for kw in ({"positions": 50, "dtype": torch.float16}, {"positions": pick_a}):
        fast = collect(model, lang, strings, SITES, VARS, seed=2, batch_size=5, vocab=vocab, **kw)
        _assert_same_collection(fast, collect_reference(model, lang, strings, SITES, VARS, seed=2, vocab=vocab, **kw))


def test_strings_without_kept_rows_are_not_run(setup):
    """Only strings with a kept row reach the model, each cut after its last kept position."""
    lang, vocab, _, strings = setup
    model = CountingModel()
    seen = []
    model.blocks[0].hook_counts.add_hook(lambda t, hook: seen.append(tuple(t.shape[:2])), is_permanent=True)
    c = collect(model, lang, strings, SITES, [], positions=lambda s, tr: [1] if s.startswith("a") else [],
                batch_size=4, vocab=vocab)
    n_a = sum(s.startswith("a") for s in strings)
    assert len(c) == n_a and sum(b for b, _ in seen) == n_a and {w for _, w in seen} == {2}
    by_length = sorted(range(len(strings)), key=lambda i: len(strings[i]))  # batches: 4 at a time in this order
    chunks = [by_length[i:i + 4] for i in range(0, len(strings), 4)]
    assert model.forward_calls == len(seen) == sum(any(strings[i].startswith("a") for i in c) for c in chunks)


def test_subsampling_is_exact_reproducible_and_batch_independent(setup):
    lang, vocab, model, strings = setup
    total = sum(len(s) + 1 for s in strings)
    a = collect(model, lang, strings, SITES, VARS, positions=37, seed=5, batch_size=3, vocab=vocab)
    b = collect(model, lang, strings, SITES, VARS, positions=37, seed=5, batch_size=16, vocab=vocab)
    d = collect(model, lang, strings, SITES, VARS, positions=37, seed=6, batch_size=3, vocab=vocab)
    assert len(a) == 37 and len(d) == 37
    pairs = lambda c: list(zip(c.seq_id.tolist(), c.pos.tolist()))  # noqa: E731
    assert pairs(a) == pairs(b) and pairs(a) != pairs(d)
    assert pairs(a) == sorted(set(pairs(a)))  # distinct, sorted
    for site in SITES:
        np.testing.assert_array_equal(a.acts[site], b.acts[site])
    _check_alignment(a, strings, vocab)
    _check_alignment(d, strings, vocab)
    # more positions than exist: all of them
    assert len(collect(model, lang, strings, SITES[:1], [], positions=10**6, vocab=vocab)) == total


def test_subsample_is_uniform_over_positions():
    """Each position is kept with probability k / total: check the kept fraction per string length
    class and per BOS/non-BOS position over many seeds."""
    lang, vocab, model = ToyLanguage(), ToyVocab(), CountingModel()
    strings = ["a" * 2, "b" * 30]  # 3 + 31 positions
    hits = np.zeros(2)
    for seed in range(200):
        c = collect(model, lang, strings, SITES[:1], [], positions=10, seed=seed, vocab=vocab)
        hits += np.bincount(c.seq_id, minlength=2)
    frac = hits / (200 * 10)
    np.testing.assert_allclose(frac, [3 / 34, 31 / 34], atol=0.02)


def test_float16_storage(setup):
    lang, vocab, model, strings = setup
    c32 = collect(model, lang, strings, SITES, ["n_a"], positions=50, vocab=vocab)
    c16 = collect(model, lang, strings, SITES, ["n_a"], positions=50, vocab=vocab, dtype=torch.float16)
    for site in SITES:
        assert c16.acts[site].dtype == np.float16 and c32.acts[site].dtype == np.float32
        np.testing.assert_array_equal(c16.acts[site].astype(np.float32), c32.acts[site])  # small ints


def test_callable_positions_and_sampling_spec(setup):
    lang, vocab, model, _ = setup
    spec = {"n": 6, "min_len": 2, "max_len": 9, "seed": 11}
    strings = lang.sample(6, 2, 9, seed=11)
    c = collect(model, lang, spec, SITES, VARS, positions=lambda s, tr: [0, len(s)], vocab=vocab)
    assert c.strings == strings
    assert len(c) == 12
    assert c.pos.tolist() == [p for s in strings for p in (0, len(s))]
    _check_alignment(c, strings, vocab)
    # positions chosen from the trace: only where the last symbol is 'a'
    c2 = collect(model, lang, strings, SITES, ["last"], vocab=vocab,
                 positions=lambda s, tr: [i for i, v in enumerate(tr["last"]) if v == "a"])
    assert set(c2.classes["last"]) == {"a"}
    assert len(c2) == sum(s.count("a") for s in strings)


def test_split_by_sequence_and_subset(setup):
    lang, vocab, model, strings = setup
    c = collect(model, lang, strings, SITES, VARS, positions=120, vocab=vocab)
    tr, te = c.split_by_sequence(test_size=0.3, seed=1)
    assert len(tr) + len(te) == len(c)
    assert not set(c.seq_id[tr]) & set(c.seq_id[te])
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(c)))
    tr2, _ = c.split_by_sequence(test_size=0.3, seed=1)
    np.testing.assert_array_equal(tr, tr2)
    sub = c.subset(te)
    assert len(sub) == len(te) and sub.strings is c.strings
    _check_alignment(sub, strings, vocab)


def test_input_features(setup):
    lang, vocab, model, strings = setup
    c = collect(model, lang, strings, SITES, [], positions=80, vocab=vocab)
    counts = c.prefix_counts()
    np.testing.assert_array_equal(counts, c.acts["blocks.0.hook_counts"][:, 3:])
    onehot = c.token_onehot()
    assert onehot.shape == (len(c), vocab.size)
    np.testing.assert_array_equal(onehot.argmax(1), c.token)


def test_save_load_round_trip(setup, tmp_path):
    lang, vocab, model, strings = setup
    lang_stack = ToyLanguage()
    c = collect(model, lang_stack, strings, SITES, VARS, positions=60, vocab=vocab, dtype=torch.float16,
                categorical=["pair"])  # tuples kept whole as categorical classes
    assert all(isinstance(v, tuple) for v in c.classes["pair"])
    path = tmp_path / "c.npz"
    c.save(path)
    assert os.listdir(tmp_path) == ["c.npz"]  # temporary file replaced
    d = Collection.load(path)
    for site in SITES:
        np.testing.assert_array_equal(c.acts[site], d.acts[site])
        assert d.acts[site].dtype == np.float16
    for v in c.labels:
        np.testing.assert_array_equal(c.labels[v], d.labels[v])
    for name in ("seq_id", "pos", "token", "length"):
        np.testing.assert_array_equal(getattr(c, name), getattr(d, name))
    assert d.classes == c.classes and d.kinds == c.kinds and d.strings == c.strings
    assert d.alphabet == c.alphabet and d.vocab_size == c.vocab_size
    c.save(path)  # overwrite in place
    assert len(Collection.load(path)) == len(c)


def test_codes_for_recodes_into_training_classes(setup):
    lang, vocab, model, strings = setup
    c = collect(model, lang, strings, SITES[:1], ["last"], vocab=vocab,
                positions=lambda s, tr: [i for i, v in enumerate(tr["last"]) if v in ("b", None)])
    assert c.classes["last"] == ["b", None]
    codes = c.codes_for("last", ["a", "b", "c", None])
    np.testing.assert_array_equal(codes, np.where(c.labels["last"] == 0, 1, 3))
    assert (c.codes_for("last", ["a", "c"]) == -1).all()


def test_errors_and_helpers(setup):
    lang, vocab, model, strings = setup
    with pytest.raises(KeyError, match="unknown hook"):
        collect(model, lang, strings, ["blocks.9.hook_nope"], [], vocab=vocab)
    with pytest.raises(KeyError, match="not in the trace"):
        collect(model, lang, strings, SITES, ["depth"], vocab=vocab)
    assert layer_of("blocks.12.mixer.hook_ssm_state") == 12 and layer_of("hook_embed") is None
    assert sites_matching(model, r"blocks\.\d+\.hook_(counts|pair)") == SITES
    with pytest.raises(ValueError, match="outside"):
        collect(model, lang, strings, SITES, [], positions=lambda s, tr: [len(s) + 1], vocab=vocab)
    with pytest.raises(ValueError, match="no strings"):
        collect(model, lang, [], SITES, [], vocab=vocab)
    assert model.training  # collect restores the mode it found
    collect(model, lang, strings[:2], SITES, [], vocab=vocab)
    assert model.training


def test_batched_collection_matches_single_string_runs_on_hooked_mamba():
    """On a real model: every kept row equals the cache of that string run alone (no padding), with
    [B, L, E, N] flattened row-major; the benchmark's child runs on a small case."""
    mamba = pytest.importorskip("hooks.mamba")
    languages = pytest.importorskip("languages")
    from languages.datasets import Vocab

    lang = languages.get("dyck", K=2, h=3)
    vocab = Vocab(lang.alphabet)
    torch.manual_seed(0)
    model = mamba.HookedMamba(mamba.MambaConfig(d_model=8, n_layers=2, vocab_size=vocab.size, d_state=4))
    sites = ["blocks.0.mixer.hook_ssm_state", "blocks.1.hook_resid_post"]
    strings = lang.sample(7, min_len=2, max_len=30, seed=0)
    c = collect(model, lang, strings, sites, ["depth", "top"], positions=60, batch_size=3, seed=2)
    assert c.acts[sites[0]].shape == (60, 16 * 4)
    _assert_same_collection(c, collect_reference(model, lang, strings, sites, ["depth", "top"], positions=60, seed=2),
                            exact=False)
    for sid in np.unique(c.seq_id):
        s = strings[sid]
        tok = torch.tensor([[vocab.BOS] + vocab.encode(s)])
        with torch.no_grad():
            _, cache = model.run_with_cache(tok, names_filter=sites)
        rows = np.flatnonzero(c.seq_id == sid)
        trace = lang.trace(s, initial=True)
        for site in sites:
            ref = cache[site][0].reshape(len(s) + 1, -1).numpy()[c.pos[rows]]
            np.testing.assert_allclose(c.acts[site][rows], ref, rtol=1e-5, atol=1e-6)
        assert c.labels["depth"][rows].tolist() == [trace["depth"][p] for p in c.pos[rows]]
        assert [c.classes["top"][k] for k in c.labels["top"][rows]] == [trace["top"][p] for p in c.pos[rows]]


def test_memory_benchmark_child_smoke():
    pytest.importorskip("hooks.mamba")
    from benchmarks.collect_memory import run_child

    r = run_child({"n": 3, "min_len": 20, "max_len": 40, "positions": 50, "dtype": "float16", "batch_size": 2})
    assert r["kept"] == 50 and r["features"] == 2 * 1024 + 2 * 32 and r["peak_rss_mb"] > 0
