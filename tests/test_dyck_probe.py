"""analyses.dyck_probe: the headline study's report on a small budget.

The construction is exact, so its numbers are known; a shipped trained model must produce every
report field. Figures are drawn and written atomically next to the report.
"""
from __future__ import annotations

import json

import pytest

from analyses.dyck_probe import Settings, main, run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("dyck_probe")
    st = Settings(n=60, in_window=(20, 120), out_window=(400, 500), probe_window=(20, 120), probe_positions=4000,
                  test_positions=600, ood_positions=600, iia_pairs=32, iia_window=(20, 80), das_pairs=96,
                  das_steps=10, das_ranks=(1, 48), das_ood_window=(100, 160), das_trained=True,
                  das_joint_layers=True)
    rep = run(["dyck8-10-mamba-1l", "no-such-model"], st, out, formats=["png"], progress=False, jobs=2)
    return rep, out


def _without_timings(x):
    if isinstance(x, dict):
        return {k: _without_timings(v) for k, v in x.items() if k not in ("seconds", "peak_rss_mb", "peak_rss_worker_mb",
                                                                            "figures")}
    if isinstance(x, list):
        return [_without_timings(v) for v in x]
    return "nan" if isinstance(x, float) and x != x else x


def test_worker_processes_give_the_in_process_report(tmp_path, monkeypatch):
    """Every model (and the trajectory figures) in a worker process: the same report as one process
    (one torch thread in both), and the figures drawn in a worker land in --out."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    st = Settings(n=12, in_window=(20, 80), out_window=(200, 240), probe_window=(20, 80), probe_positions=500,
                  test_positions=200, ood_positions=200, iia_pairs=16, iia_window=(20, 60))
    reps = {j: run(["dyck8-10-mamba-2l"], st, tmp_path / f"jobs{j}", progress=False, jobs=j,
                   parts=("accuracy", "probes", "iia")) for j in (1, 2)}
    assert list(reps[2]["models"]) == ["construction", "dyck_mamba", "dyck8-10-mamba-2l"]
    assert _without_timings(reps[1]) == _without_timings(reps[2])
    for j in (1, 2):
        names = {p.name for p in (tmp_path / f"jobs{j}").iterdir()}
        assert {"trajectory.png", "projection.png", "report.json"} <= names and "figure_error" not in reps[j]


def test_report_files_and_schema(report):
    rep, out = report
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["models"].keys() == rep["models"].keys() == {"construction", "dyck_mamba", "dyck8-10-mamba-1l"}
    assert any("no-such-model" in s for s in rep["skipped"])
    for name, m in rep["models"].items():
        assert set(m["close_accuracy"]) == {"in", "out"}
        assert isinstance(m["verdict"], str) and m["verdict"]
        for p in m["probes"]:
            assert {"layer", "site", "variable", "accuracy", "selectivity", "ood_accuracy"} <= set(p)
        for r in m["iia"]:
            assert {"layer", "variable", "iia", "baseline"} <= set(r)
    assert rep["models"]["dyck8-10-mamba-1l"]["alignment"]
    for a in rep["models"]["dyck8-10-mamba-1l"]["alignment"]:
        assert {"layer", "r2", "cka"} <= set(a) and 0 <= a["cka"] <= 1
    md = (out / "report.md").read_text()
    assert "## Verdicts" in md and "dyck8-10-mamba-1l" in md
    assert all((out / f).exists() for f in ("iia.png", "length_generalization.png", "probes_construction.png"))


def test_construction_numbers_are_exact(report):
    rep, _ = report
    c = rep["models"]["construction"]
    assert c["close_accuracy"] == {"in": 1.0, "out": 1.0}
    depth0 = [p for p in c["probes"] if p["variable"] == "depth" and p["site"] == "blocks.0.hook_ssm_state"][0]
    assert depth0["accuracy"] == 1.0 and depth0["ood_accuracy"] == 1.0
    top1 = [p for p in c["probes"] if p["variable"] == "top" and p["site"] == "blocks.1.hook_ssm_state"][0]
    # One probe per depth: exact where the training rows cover the (depth, top) pairs; with this small
    # budget deep stacks are rare, so only a floor is checked here (tests/test_probe_dyck.py checks 1.0).
    assert top1["accuracy_given_depth"] > 0.75 and top1["accuracy"] < top1["accuracy_given_depth"]
    iia = {(r["layer"], r["variable"]): r for r in c["iia"]}
    assert iia[(0, "depth")]["iia"] == 1.0 and iia[(1, "top")]["iia"] == 1.0
    assert iia[(0, "depth")]["baseline"] < 0.6
    assert c["verdict"].startswith("Yes")


def test_das_section_finds_the_constructions_variables(report):
    rep, out = report
    keys = {"variable", "layers", "rank", "iia", "iia_ood", "iia_random_subspace", "iia_probe_subspace",
            "iia_random_init"}
    for name, m in rep["models"].items():
        assert m["das"] and all(keys <= set(r) for r in m["das"])
        assert {r["variable"] for r in m["das"]} == {"depth", "top"}
    # The diagonal construction: depth is its whole layer-1 state (1 number), top its layer-2 state.
    c = {(r["variable"], tuple(r["layers"])): r for r in rep["models"]["construction"]["das"]}
    assert c[("depth", (1,))]["rank"] == 1 and c[("depth", (1,))]["iia"] == 1.0
    assert c[("top", (2,))]["iia"] == 1.0
    # As HookedMamba weights depth is one direction of 144: rank 1 finds it, far above its controls.
    d = {(r["variable"], tuple(r["layers"])): r for r in rep["models"]["dyck_mamba"]["das"]}
    r = d[("depth", (1,))]
    assert r["rank"] == 1 and r["iia"] >= 0.99 and r["iia_random_subspace"] < 0.75  # ~ no change: 0.5-0.55
    # This budget (96 pairs, 10 steps) reaches 0.83 on the memory; tests/test_das.py checks >= 0.99 on more.
    assert d[("top", (2,))]["iia"] >= 0.75 and d[("top", (2,))]["iia_random_subspace"] < 0.7
    assert rep["models"]["construction"]["verdict_das"].startswith("Yes")
    assert rep["models"]["dyck_mamba"]["verdict_das"].startswith(("Yes", "Partly"))
    trained = rep["models"]["dyck8-10-mamba-1l"]
    assert trained["das"][0]["iia_random_init"] is not None  # the random-init search ran at the best rank
    assert (out / "das_rank.png").exists() and (out / "patching.png").exists()
    md = (out / "report.md").read_text()
    assert "## Distributed alignment search" in md


def test_cli_rejects_a_model_of_another_language(tmp_path, capsys):
    assert main(["--model", "dyck1-mamba", "--quick", "--no-progress", "--no-figures", "--out", str(tmp_path)]) == 2
    assert "not dyck" in capsys.readouterr().err


def test_steering_the_construction_by_one_depth_matches_the_automaton():
    import languages
    from analyses.dyck_steering import steering_accuracy
    from hooks import constructions

    lang = languages.get("dyck", K=8, h=10)
    strings = lang.sample(20, 20, 80, seed=5)
    for score in ("close", "sets"):
        r = steering_accuracy(constructions.dyck(8, 10).model, "blocks.0.hook_ssm_state", lang, strings,
                              fit_n=40, positions=1500, score=score)
        assert r["n"] > 10 and r["accuracy"] == 1.0 and r["unchanged"] < r["n"]
    # A step of 0 along the probe changes nothing: the close at depth + 1 is (almost never) the one
    # already winning, so the close score drops far below 1.
    from unittest import mock

    import analyses.dyck_steering as ds
    from probe.subspace_edits import steer as real

    with mock.patch.object(ds, "steer", lambda m, site, w, alpha, **k: real(m, site, w, 0.0, **k)):
        r0 = ds.steering_accuracy(constructions.dyck(8, 10).model, "blocks.0.hook_ssm_state", lang, strings,
                                  fit_n=40, positions=1500)
    assert r0["unchanged"] == r0["n"] and r0["accuracy"] < 0.5
