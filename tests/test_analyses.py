"""The sibling studies (flip-flop, counters, parity) in quick mode, their shared helpers, and the figures.

Each study runs on whatever shipped models exist (a missing one is skipped by the study itself and
listed in ``skipped``); the construction always runs and its numbers are exact: the flip-flop
memory holds the stored bit (probe 1.0, IIA 1.0, no glitch), the counter state is the counter
(R^2 = 1 in and out of distribution), the signed parity gate never settles on 1^T.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from trained_models import names as shipped_names


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _read(out: Path) -> dict:
    assert (out / "report.md").read_text().startswith("# ")
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    return json.loads((out / "report.json").read_text())


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_skipped(report: dict, defaults) -> None:
    have = set(shipped_names())
    for name in defaults:
        if name in have:
            assert name in report["models"] or any(s.startswith(name + ":") for s in report["skipped"])
        else:
            assert name not in report["models"]
            assert any(s.startswith(name + ":") for s in report["skipped"])


def _run(study, tmp_path_factory, **settings) -> tuple[dict, dict]:
    """``study.run`` in quick mode on its default models, each model in a worker process (``jobs=2``; the
    Dyck study's test checks that workers give the in-process report): ``(the report it returned, the one
    it wrote)``."""
    out = tmp_path_factory.mktemp(study.__name__.rpartition(".")[2])
    returned = study.run(list(study.DEFAULT_MODELS), study.Settings.quick(**settings), out, formats=("png",),
                         progress=False, jobs=2)
    return returned, _read(out)


def _report_of(study_report: tuple, study) -> dict:
    """The report a study wrote: the one ``run`` returned, with the run's time and memory, and every
    default model either run or skipped with a reason."""
    returned, report = study_report
    assert report["study"] == study.__name__.rpartition(".")[2] and set(report["models"]) == set(returned["models"])
    assert _is_num(report["seconds"]) and _is_num(report["peak_rss_mb"])
    _check_skipped(report, study.DEFAULT_MODELS)
    return report


def _check_probe_rows(rows: list, ood_names) -> None:
    assert rows
    for r in rows:
        assert isinstance(r["layer"], int) and isinstance(r["site"], str) and isinstance(r["variable"], str)
        assert _is_num(r["accuracy"]) and 0.0 <= r["accuracy"] <= 1.0
        assert set(r["ood"]) == set(ood_names)
        for key in ("selectivity", "control", "majority", "input_token", "input_counts"):
            assert _is_num(r[key]), key


def _figures_ok(report: dict) -> None:
    assert "figure_error" not in report, report.get("figure_error")
    assert report["figures"]
    for f in report["figures"]:
        assert Path(f).stat().st_size > 1000


# --------------------------------------------------------------------------- flip-flop

SMALL_DAS = dict(das_pairs=48, das_test_pairs=32, das_steps=8, das_ranks=(1, 4))
DAS_KEYS = {"variable", "layers", "rank", "iia", "iia_ood", "iia_random_subspace", "iia_probe_subspace",
            "iia_random_init", "iia_whole_swap", "baseline"}


def _das_ok(m: dict, variable: str) -> dict:
    """Every model has a best DAS record per layer; returns them by layer tuple."""
    assert m["das"] and all(DAS_KEYS <= set(r) for r in m["das"]) and {r["variable"] for r in m["das"]} == {variable}
    assert [tuple(r["layers"]) for r in m["das"]] == [(l + 1,) for l in range(m["n_layers"])]
    assert all(0.0 <= r["iia"] <= 1.0 for r in m["das_sweep"])
    return {tuple(r["layers"]): r for r in m["das"]}


@pytest.fixture(scope="module")
def flipflop_report(tmp_path_factory):
    from analyses import flipflop_probe as fp

    return _run(fp, tmp_path_factory, n=16, length=256, probe_train=48, probe_test=16, probe_positions=1200,
                test_positions=500, ood_positions=800, iia_pairs=32, **SMALL_DAS)


def test_flipflop_report_shape(flipflop_report):
    from analyses import flipflop_probe as fp

    report = _report_of(flipflop_report, fp)
    for name, m in report["models"].items():
        assert set(m["reads"]) == {"in", "dense", "sparse"}
        for k, r in m["reads"].items():
            assert 0.0 <= r["glitch_rate"] <= 1.0 and r["reads"] > 0
            assert [b["distance"] for b in r["by_distance"]] == fp.distance_bins()
            assert sum(b["reads"] for b in r["by_distance"]) == r["reads"]
            assert sum(b["wrong"] for b in r["by_distance"]) == r["wrong_reads"]
        _check_probe_rows(m["probes"], ["dense", "sparse"])
        assert {r["variable"] for r in m["probes"]} == {"stored", "instruction"}
        assert [r["layer"] for r in m["iia"]] == list(range(m["n_layers"])) + ["all"]
        for r in m["iia"]:
            assert 0.0 <= r["iia"] <= 1.0 and 0.0 <= r["baseline"] <= 1.0 and r["n_pairs"] > 0
        assert isinstance(m["verdict"], str) and m["verdict"]
    _figures_ok(report)


def test_flipflop_construction_is_exact(flipflop_report):
    _, report = flipflop_report
    c = report["models"]["construction"]
    assert all(c["reads"][k]["glitch_rate"] == 0.0 and c["reads"][k]["wrong_reads"] == 0 for k in c["reads"])
    # The set/reset memory (layer 2's state) is the stored bit, at any age, dense or sparse.
    (mem,) = [r for r in c["probes"] if r["site"] == "blocks.1.hook_ssm_state" and r["variable"] == "stored"]
    assert mem["accuracy"] == 1.0 and mem["ood"] == {"dense": 1.0, "sparse": 1.0}
    for pts in mem["by_distance"].values():
        assert all(b["accuracy"] == 1.0 for b in pts if b["accuracy"] is not None)
    # The previous-token channel (layer 1) does not hold it.
    (chan,) = [r for r in c["probes"] if r["site"] == "blocks.0.hook_ssm_state" and r["variable"] == "stored"]
    assert chan["accuracy"] < 0.9
    iia = {r["layer"]: r["iia"] for r in c["iia"]}
    assert iia[1] == 1.0 and iia["all"] == 1.0
    # DAS: the memory (layer 2, one number) carries the bit; the previous-token channel does not.
    das = _das_ok(c, "stored")
    assert das[(2,)]["rank"] == 1 and das[(2,)]["iia"] == 1.0
    assert das[(1,)]["iia"] < 0.9
    assert "DAS: stored: layer 2 in 1 of 1 dimensions" in c["verdict"]
    for m in report["models"].values():
        _das_ok(m, "stored")


def test_write_age_and_distance_bins():
    from analyses.flipflop_probe import distance_bin, distance_bins, write_age

    s = "w1i0i1r1w0r0"
    assert write_age(s, 1) is None and write_age(s, 2) == 0  # the write completes with its bit
    assert write_age(s, 7) == 3  # read 'r' at index 6: three instructions after the write at 0
    assert write_age(s, 10) == 0 and write_age(s, 11) == 1
    assert distance_bins()[0] == "0-1" and distance_bins()[-1].endswith("+")
    assert [distance_bin(d) for d in (0, 1, 2, 4, 5, 300)] == [0, 0, 1, 1, 2, 5]


# --------------------------------------------------------------------------- counters


@pytest.fixture(scope="module")
def counter_report(tmp_path_factory):
    from analyses import counter_probe as cp

    return _run(cp, tmp_path_factory, n=8, probe_train=60, probe_test=20, probe_positions=800, test_positions=400,
                ood_positions=200)


def test_counter_report_shape(counter_report):
    from analyses import counter_probe as cp

    report = _report_of(counter_report, cp)
    assert set(report["languages"]) == {"dyck1", "anbn"}
    for lang, info in report["languages"].items():
        assert len(info["in_bins"]) == 2 and len(info["out_bins"]) == 4
        assert len(info["trajectory"]["value"]) == len(info["trajectory"]["string"]) + 1
    for name, m in report["models"].items():
        info = report["languages"][m["language"]]
        bins = info["in_bins"] + info["out_bins"]
        assert set(m["strict_accuracy"]) == set(bins)
        assert all(0.0 <= v <= 1.0 for v in m["strict_accuracy"].values())
        _check_probe_rows(m["probes"], bins)
        for r in m["probes"]:
            assert r["variable"] == info["variable"] and _is_num(r["r2"]) and set(r["ood_r2"]) == set(bins)
        assert set(m["breaks"]) >= {"threshold", "site", "probe_accuracy", "probe_r2", "model_strict"}
        assert len(m["trajectory"]["readout"]) == len(info["trajectory"]["string"]) + 1
        assert isinstance(m["verdict"], str) and m["verdict"]
    _figures_ok(report)


def test_counter_constructions_are_exact(counter_report):
    _, report = counter_report
    for lang in ("dyck1", "anbn"):
        m = report["models"][f"construction-{lang}"]
        info = report["languages"][lang]
        (state,) = [r for r in m["probes"] if r["site"] == "blocks.0.hook_ssm_state"]
        assert state["r2"] > 0.9999 and state["accuracy"] == 1.0
        # Fit on training lengths, the read-out extrapolates exactly to three times their length.
        assert all(v == 1.0 for v in state["ood"].values())
        assert all(v > 0.999 for v in state["ood_r2"].values())
        assert all(v == 1.0 for v in m["strict_accuracy"].values())
        assert m["breaks"]["probe_accuracy"] is None and m["breaks"]["model_strict"] is None
        assert info["out_bins"][-1].endswith(str(3 * info["train_window"][1]))
        # DAS on the counter (the counter automaton's counterfactual): one dimension carries it exactly.
        (das,) = m["das"]
        assert das["rank"] == 1 and das["iia"] == 1.0 and das["iia_ood"] == 1.0 and das["baseline"] < 0.8
        assert "DAS:" in m["verdict"]
    # a^n b^n's state is [counter, phase flag]: a random direction of it does not carry the counter.
    assert report["models"]["construction-anbn"]["das"][0]["iia_random_subspace"] < 0.5
    assert not any(m.get("das") for n, m in report["models"].items() if not n.startswith("construction"))


def test_counter_length_bins():
    from analyses.counter_probe import length_bins

    assert length_bins((2, 50)) == ([(2, 25), (26, 50)], [(51, 75), (76, 100), (101, 125), (126, 150)])
    assert length_bins((4, 200))[1][-1] == (501, 600)


# --------------------------------------------------------------------------- parity


@pytest.fixture(scope="module")
def parity_report(tmp_path_factory):
    from analyses import parity_probe as pp

    return _run(pp, tmp_path_factory, n=16, probe_train=60, probe_test=20, probe_positions=800, test_positions=400,
                ood_positions=400, **SMALL_DAS)


def test_parity_report_shape(parity_report):
    from analyses import parity_probe as pp

    report = _report_of(parity_report, pp)
    for name, m in report["models"].items():
        assert set(m["strict_accuracy"]) == {"bin0", "bin1", "bin2"}
        assert all(0.0 <= v <= 1.0 for v in m["strict_accuracy"].values())
        w = m["witness"]
        assert w["T"] == report["settings"]["T"] and isinstance(w["constant_tail"], bool)
        for layer in w["layers"]:
            assert layer["constant_from"] is None or 0 <= layer["constant_from"] <= w["T"]
            assert _is_num(layer["last_change"]) and layer["size"] >= 1
        _check_probe_rows(m["probes"], ["bin1", "bin2"])
        for r in m["probes"]:
            assert 0.0 <= r["accuracy_given_token"] <= 1.0 and set(r["ood_given_token"]) == {"bin1", "bin2"}
        assert m["gate"] in ("signed", "nonnegative", "time_invariant")
        assert isinstance(m["verdict"], str) and m["verdict"]
    _figures_ok(report)


def test_parity_signed_construction(parity_report):
    _, report = parity_report
    c = report["models"]["construction"]
    assert c["gate"] == "signed"
    assert c["witness"]["constant_tail"] is False
    assert all(l["constant_from"] is None and l["last_change"] == 2.0 for l in c["witness"]["layers"])
    assert c["witness"]["logits_constant_from"] is None
    assert all(v == 1.0 for v in c["strict_accuracy"].values())
    (state,) = [r for r in c["probes"] if r["site"] == "blocks.0.hook_ssm_state"]
    assert state["accuracy"] == 1.0 and state["ood"] == {"bin1": 1.0, "bin2": 1.0}
    assert state["accuracy_given_token"] == 1.0
    das = _das_ok(c, "parity")
    assert das[(1,)]["rank"] == 1 and das[(1,)]["iia"] == 1.0 and das[(1,)]["baseline"] < 0.8
    for m in report["models"].values():
        _das_ok(m, "parity")


# --------------------------------------------------------------------------- shared helpers


def test_common_tables_and_reports(tmp_path):
    from analyses.study import fmt, md_table, write_report

    assert fmt(None) == "–" and fmt(float("nan")) == "–" and fmt(0.5) == "0.50" and fmt(3) == "3"
    lines = md_table(["a", "b"], [[1, 0.25], ["x|y", None]])
    assert lines == ["| a | b |", "|---|---|", "| 1 | 0.25 |", "| x\\|y | – |"]
    j, m = write_report(tmp_path / "r", {"x": np.float32(1.5), "t": (1, 2)}, "# r\n")
    assert json.loads(j.read_text()) == {"x": 1.5, "t": [1, 2]} and m.read_text() == "# r\n"
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.json", "report.md"]


def test_common_sampling_helpers():
    import languages
    from analyses.common import sample_upto, split_strings

    anbn = languages.get("anbn")
    assert len(sample_upto(anbn, 1000, (4, 200), seed=0)) == 99  # one string per even length
    tr, te = split_strings(anbn, 30, 10, (4, 200), seed=0)
    assert len(tr) == 30 and len(te) == 10 and not set(tr) & set(te)
    tr, te = split_strings(anbn, 300, 100, (4, 200), seed=0)
    assert len(tr) + len(te) == 99 and not set(tr) & set(te) and len(te) >= 1


def test_base_parser_flags():
    from analyses.study import base_parser

    ap = base_parser("x", "Doc line.\nMore.", "outputs/x")
    a = ap.parse_args(["--model", "a", "--model", "b", "--n", "5", "--format", "svg", "--format", "pdf", "--quick"])
    assert a.model == ["a", "b"] and a.n == 5 and a.format == ["svg", "pdf"] and a.quick and a.out == "outputs/x"
    with pytest.raises(SystemExit):
        ap.parse_args(["--format", "jpg"])
    from analyses.parallel import default_jobs

    assert a.jobs == default_jobs() and ap.parse_args(["--jobs", "1"]).jobs == 1
    with pytest.raises(SystemExit):
        ap.parse_args(["--jobs", "0"])
    # The description is the docstring's first paragraph, not its first line cut mid-sentence.
    assert base_parser("x", "Where the bit lives, and how\n  reads fail.\n\nMore.", "o").description == \
        "Where the bit lives, and how reads fail."


# --------------------------------------------------------------------------- figures


def _figures():
    from analyses import figures as F

    rng = np.random.default_rng(0)
    s = "(()(()))"
    depth = [0, 1, 2, 1, 2, 3, 2, 1, 0]
    top = [None, "(", "(", "(", "(", "(", "(", "(", None]
    recs = [{"layer": l, "site": f"blocks.{l}.{site}", "variable": v, "score": float(rng.random())}
            for l in range(2) for site in ("hook_ssm_state", "hook_resid_post") for v in ("depth", "top")]
    return {
        "trajectory": F.state_trajectory(s, depth, {"L1": np.array(depth) + 0.1}, top=top,
                                         top_readouts={"L1": top[:-2] + ["(", "("]}, title="t"),
        "projection": F.state_projection({"a": (rng.normal(size=(50, 4)), rng.integers(0, 3, 50))}, title="p"),
        "heatmap": F.probe_heatmap(recs, title="h"),
        "iia": F.iia_heatmap(rng.random((3, 4)), ["a", "b", "c"], [1, 2, 3, 4], title="i"),
        "curves": F.length_curves({"m": [(10, 1.0), (100, 0.5)]}, train_max=50, title="c"),
    }


def test_figures_export_png_svg_pdf(tmp_path):
    import matplotlib.pyplot as plt

    from analyses.figures import save_figure

    magic = {"png": b"\x89PNG", "pdf": b"%PDF"}
    for name, fig in _figures().items():
        paths = save_figure(fig, tmp_path / name, ["png", "svg", "pdf"])
        assert [p.suffix for p in paths] == [".png", ".svg", ".pdf"]
        for p in paths:
            data = p.read_bytes()
            fmt = p.suffix[1:]
            assert (data.startswith(magic[fmt]) if fmt in magic else b"<svg" in data[:2000]), (name, fmt)
        plt.close(fig)
    assert not list(tmp_path.glob(".*.tmp"))


def test_save_figure_rejects_unknown_format(tmp_path):
    import matplotlib.pyplot as plt

    from analyses.figures import save_figure

    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match=r"unknown figure format 'jpg'.*png.*svg.*pdf"):
        save_figure(fig, tmp_path / "x", ["png", "jpg"])
    plt.close(fig)
    assert not (tmp_path / "x.jpg").exists()


def test_no_nan_in_construction_numbers(flipflop_report, counter_report, parity_report):
    for _, report in (flipflop_report, counter_report, parity_report):
        for name, m in report["models"].items():
            if name.startswith("construction"):
                for r in m["probes"]:
                    assert not (isinstance(r["accuracy"], float) and math.isnan(r["accuracy"]))


def test_principal_axes_match_the_full_svd_on_large_states():
    """The randomized PCA behind the projection figure finds the full SVD's leading axes (up to sign)
    and singular values, on states with a decaying spectrum like a trained model's."""
    from analyses.figures import principal_axes, principal_axes_reference

    rng = np.random.default_rng(3)
    n, d = 900, 300
    scales = 10.0 * 0.8 ** np.arange(d)  # decaying spectrum, a clear gap between axes 1, 2 and 3
    x = (rng.normal(size=(n, d)) * scales) @ np.linalg.qr(rng.normal(size=(d, d)))[0]
    xc = x - x.mean(0)
    fast, s_fast = principal_axes(xc, 2)
    ref, s_ref = principal_axes_reference(xc, 2)
    assert fast.shape == ref.shape == (2, d)
    np.testing.assert_allclose(np.abs(np.sum(fast * ref, axis=1)), 1.0, atol=1e-8)  # same axes up to sign
    np.testing.assert_allclose(s_fast, s_ref, rtol=1e-10)
    # A one-dimensional state gets one axis (the figure plots it against zero).
    one, s1 = principal_axes(xc[:, :1], 2)
    assert one.shape == (1, 1) and abs(one[0, 0]) == pytest.approx(1.0)
    assert s1[0] == pytest.approx(np.linalg.norm(xc[:, 0]))
