"""probe.mdl (online code) and probe.grid (the tidy table) on synthetic data and the toy model."""
from __future__ import annotations

import math

import numpy as np
import pytest

from _probe_toys import CountingModel, ToyLanguage, ToyVocab
from probe import collect, format_table, length_bins, online_code_length, probe_grid, random_init_like


def test_online_code_learnable_vs_shuffled_classification():
    rng = np.random.default_rng(0)
    n, d, K = 3000, 20, 4
    y = rng.integers(0, K, size=n)
    dirs = rng.normal(size=(K, d))
    X = rng.normal(size=(n, d)) + 3 * dirs[y]
    good = online_code_length(X, y, seed=0)
    bad = online_code_length(X, rng.permutation(y), seed=0)
    assert good["uniform_bits"] == pytest.approx(n * math.log2(K))
    assert good["compression"] > 4 * bad["compression"]
    assert good["compression"] > 5 and 0.8 < bad["compression"] < 1.1
    assert sum(b[2] for b in good["blocks"]) == pytest.approx(good["online_bits"])
    assert [b[1] for b in good["blocks"]][-1] == n and good["blocks"][0][0] == 0
    # blocks tile [0, n)
    assert all(a[1] == b[0] for a, b in zip(good["blocks"][:-1], good["blocks"][1:]))


def test_online_code_regression():
    rng = np.random.default_rng(1)
    n, d = 2000, 10
    depth = rng.integers(0, 11, size=n).astype(float)
    X = rng.normal(size=(n, d)) + np.outer(depth, rng.normal(size=d))
    good = online_code_length(X, depth, kind="regression")
    bad = online_code_length(X, rng.permutation(depth), kind="regression")
    assert good["uniform_bits"] == pytest.approx(n * math.log2(11))
    assert good["compression"] > 3 * bad["compression"] and bad["compression"] < 1.2


@pytest.fixture(scope="module")
def toy_collections():
    lang, vocab, model = ToyLanguage(), ToyVocab(), CountingModel()
    sites = ["blocks.0.hook_counts", "blocks.0.hook_token"]
    variables = ["n_a", "last", "state"]
    train = collect(model, lang, {"n": 60, "min_len": 5, "max_len": 20, "seed": 1}, sites, variables,
                    positions=800, vocab=vocab)
    test = collect(model, lang, {"n": 30, "min_len": 5, "max_len": 20, "seed": 2}, sites, variables,
                   positions=400, vocab=vocab)
    longer = collect(model, lang, {"n": 30, "min_len": 21, "max_len": 60, "seed": 3}, sites, variables,
                     positions=600, vocab=vocab)
    rnd = random_init_like(model, seed=5)
    rtrain = collect(rnd, lang, train.strings, sites, variables, positions=800, vocab=vocab)
    rtest = collect(rnd, lang, test.strings, sites, variables, positions=400, vocab=vocab)
    return train, test, longer, (rtrain, rtest)


def test_probe_grid_table(toy_collections):
    train, test, longer, rnd = toy_collections
    bins = length_bins(longer, [21, 41, 61])
    assert set(bins) == {"21-40", "41-60"}
    recs = probe_grid(train, test, ["n_a", "last"], ["blocks.0.hook_counts", "blocks.0.hook_token"],
                      ood=bins, random_init=rnd, depth_var="n_a", seed=0)
    by = {(r.site, r.variable): r for r in recs}
    assert len(recs) == 4
    r = by[("blocks.0.hook_counts", "n_a")]
    assert r.layer == 0 and r.metric == "r2" and r.kind == "regression"
    assert r.score > 0.999 and r.accuracy_rounded == 1.0 == r.accuracy and r.r2 == r.score
    # a counter extrapolates to longer strings and to larger values than seen in training
    assert r.ood["21-40"].score > 0.999 and r.ood["41-60"].accuracy_rounded == 1.0 == r.ood["41-60"].accuracy
    assert r.ood["41-60"].n_deep > 0 and r.ood["41-60"].deep > 0.99
    assert r.ood["21-40"].n_deep == int((bins["21-40"].labels["n_a"] > train.labels["n_a"].max()).sum())
    assert r.input_counts > 0.999  # n_a is linear in the prefix counts
    assert abs(r.majority) < 0.1
    # the current symbol is read off the token site and is a function of the token: selectivity ~ 0
    t = by[("blocks.0.hook_token", "last")]
    assert t.metric == "accuracy" and t.score == 1.0 == t.accuracy and t.input_token == 1.0 and t.r2 is None
    assert t.control > 0.99 and t.selectivity == t.score - t.control and abs(t.selectivity) < 0.01
    assert t.majority < 0.5 and t.accuracy_rounded is None and t.ood["21-40"].accuracy_rounded is None
    # not readable from the token site: n_a
    assert by[("blocks.0.hook_token", "n_a")].score < 0.5
    # the random-init toy model computes the same features up to the (unused) weights: same scores
    assert r.random_init > 0.999
    table = format_table(recs)
    lines = table.splitlines()
    assert lines[0].startswith("| site | layer | variable | metric | score |") and len(lines) == 6
    assert "ood_21-40" in lines[0] and "selectivity" in lines[0]
    # the flat form names each OOD score; the table is the flat form, row by row
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    flat = r.as_dict()
    assert {"ood_21-40", "ood_41-60_rounded", "n_ood_41-60_deep", "ood_41-60_deep"} <= set(flat)
    assert flat["ood_41-60_rounded"] == r.ood["41-60"].accuracy_rounded
    assert flat["n_ood_41-60_deep"] == r.ood["41-60"].n_deep
    row = lines[2 + recs.index(r)]
    cells = dict(zip(header, (c.strip() for c in row.strip("|").split("|"))))
    assert cells["site"] == r.site and cells["n_ood_41-60_deep"] == str(r.ood["41-60"].n_deep)
    assert float(cells["score"]) == pytest.approx(r.score, abs=1e-3) and cells["metric"] == "r2"
    assert format_table([x.as_dict() for x in recs]) == table  # plain mappings render the same


def test_probe_grid_mdl_and_categorical_alignment(toy_collections):
    train, test, _, _ = toy_collections
    recs = probe_grid(train, test, ["state"], ["blocks.0.hook_counts"], baselines=("majority",), mdl=True)
    (r,) = recs
    assert r.control is None and r.input_token is None and r.mdl_compression > 0
    assert 0.0 <= r.score <= 1.0 and r.metric == "accuracy"
    flat = r.as_dict()  # baselines not run are left out of the flat form
    assert "control" not in flat and "input_token" not in flat and flat["mdl_compression"] == r.mdl_compression


def test_probe_given_both_kinds(toy_collections):
    from probe import probe_given

    train, test, _, _ = toy_collections
    reg = probe_given(train, test, "n_a", "blocks.0.hook_counts", given="last")
    assert reg["metric"] == "r2" and reg["score"] > 0.999
    assert set(reg["per_value"]) <= {"a", "b", "c", None}
    clf = probe_given(train, test, "last", "blocks.0.hook_token", given="state")
    assert clf["metric"] == "accuracy" and clf["score"] == 1.0
    assert sum(n for _, n in clf["per_value"].values()) == len(test)


def test_a_control_task_with_one_label_scores_as_that_constant(toy_collections):
    """With few token types the control mapping can give every token the same label (e.g. PARITY's three
    tokens, a 1-in-4 chance): no classifier can be fit, the control is solved by the constant, and its
    score is the share of test labels equal to it (the grid used to stop with a one-class error)."""
    from probe.controls import apply_control, control_mapping

    train, test, _, _ = toy_collections
    y = train.codes_for("last", train.classes["last"])
    seed = next(s for s in range(200) if len(set(control_mapping(train.token, y, s).values())) == 1)
    mapping = control_mapping(train.token, y, seed)
    want = np.mean(apply_control(test.token, mapping, seed, marginal=y) == next(iter(mapping.values())))
    (rec,) = probe_grid(train, test, variables=["last"], sites=["blocks.0.hook_counts"], baselines=("control",),
                        seed=seed, depth_var=None)
    assert rec.control == pytest.approx(want) and rec.selectivity == pytest.approx(rec.score - want)
