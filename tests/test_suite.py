"""The suite runner (``python -m trained_models.suite``) on its quick budget, and the paper's numbers."""
import csv
import json
import shlex

import pytest

import languages
from trained_models import suite
from trained_models.paper_numbers import CLASSES, MODELS, PAPER, SUITE, paper_bins, transformer_pos_encoding

LANGS = ["tomita1", "anbn"]
VARIANTS = ["mamba-1l", "transformer"]


@pytest.fixture(scope="module")
def quick_suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    argv = ["--budget", "quick", "--languages", *LANGS, "--models", ",".join(VARIANTS),
            "--out", str(root / "results"), "--runs-dir", str(root / "runs")]
    assert suite.main(argv) == 0
    return root, argv


def _done_rows(path):
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return rows, [r for r in rows if r["status"] == "done"]


def test_quick_suite_writes_results_for_the_selected_runs(quick_suite):
    root, _ = quick_suite
    assert (root / "results" / "suite.csv").exists() and (root / "results" / "suite.md").exists()
    rows, done = _done_rows(root / "results" / "suite.csv")
    assert len(rows) == 27 * len(suite.VARIANTS)  # the whole grid, missing runs included
    assert {(r["language"], r["variant"]) for r in done} == {(x, v) for x in LANGS for v in VARIANTS}
    for r in done:
        assert r["class"] == languages.get(r["language"]).kind and r["budget"] == "quick"
        assert 0 <= float(r["bin0"]) <= 100 and 0 <= float(r["bin1"]) <= 100
        assert (r["bin2"] != "") == (r["language"] == "anbn")  # counter languages have a third bin
        assert int(r["n_train"]) > 0 and int(r["steps"]) > 0
    for x in LANGS:
        for v in VARIANTS:
            res = json.loads((root / "runs" / "quick" / x / f"{v}.json").read_text())
            assert res["language"] == x and res["variant"] == v
            assert res["train_config"]["threads"] == 1 and res["train_config"]["d_model"] == 8


def test_second_invocation_skips_completed_runs(quick_suite, capsys):
    root, argv = quick_suite
    results = [root / "runs" / "quick" / x / f"{v}.json" for x in LANGS for v in VARIANTS]
    cards = [root / "runs" / "quick" / x / v / "card.json" for x in LANGS for v in VARIANTS]
    before = [p.stat().st_mtime_ns for p in results + cards]
    capsys.readouterr()
    assert suite.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["trained"] == 0 and summary["skipped"] == len(results)
    assert [p.stat().st_mtime_ns for p in results + cards] == before


def test_report_shows_the_papers_numbers_beside_ours_and_counts_missing_runs(quick_suite):
    root, _ = quick_suite
    md = (root / "results" / "suite.md").read_text()
    total = 27 * len(suite.VARIANTS)
    assert f"Runs done: 4 of {total}; {total - 4} missing" in md
    anbn = next(line for line in md.splitlines() if "(`anbn`)" in line)
    for paper_cell in ("100 / 4.1 / 0", "100 / 9.4 / 0", "100 / 21.3 / 0", "100 / 100 / 100"):
        assert paper_cell in anbn
    tomita1 = next(line for line in md.splitlines() if "(`tomita1`)" in line)
    assert "100 / 100 (pos mask)" in tomita1
    assert tomita1.count("–") == len(suite.VARIANTS) - 2  # all but mamba-1l and the transformer not run
    for cls in ("Star-free", "Non-star-free", "Counter"):
        assert f"## {cls} regular languages" in md or f"## {cls} languages" in md


def test_deadline_defers_pending_runs(tmp_path):
    runs = suite.plan("quick", tmp_path, ["tomita2"], ["mamba-1l"])
    out = suite.run_suite(runs, max_total_minutes=1e-9)
    assert out["deferred"] == 1 and out["trained"] == 0
    assert not runs[0].result_path.exists()


def test_printed_commands_build_the_same_configs():
    from trained_models.train import build_parser, config_from_args

    runs = suite.plan("small", "runs/suite")
    assert len(runs) == 27 * len(suite.VARIANTS)
    assert [r.variant for r in runs[:2]] == ["mamba-2l", "transformer"]  # these two first, all languages
    assert {r.variant for r in runs[: 2 * 27]} == {"mamba-2l", "transformer"}
    for run in runs[:12]:
        argv = shlex.split(run.command())[3:]
        assert config_from_args(build_parser().parse_args(argv)) == run.config()
    d2 = next(r for r in runs if r.language == "d2" and r.variant == "transformer").config()
    t4 = next(r for r in runs if r.language == "tomita4" and r.variant == "transformer").config()
    assert (d2.pos_encoding, t4.pos_encoding) == ("none", "learned")
    signed = next(r for r in runs if r.variant == "mamba-signed-2l").config()
    assert (signed.gate, signed.layers) == ("signed", 2)
    m2 = next(r for r in runs if r.variant == "mamba2-2l-signed").config()
    assert (m2.model, m2.gate, m2.layers) == ("mamba2", "signed", 2)
    anbn = next(r for r in runs if r.language == "anbn" and r.variant == "mamba-2l").config()
    assert anbn.max_steps == 300 and anbn.train_window == (4, 200) and anbn.test_windows["bin2"] == (402, 600)
    eval_every = max(1, -(-80 // anbn.batch_size) // anbn.evals_per_epoch)  # 80 training strings
    assert anbn.patience * eval_every >= 300  # small windows: patience in steps, not evaluations
    full = suite.plan("full", "runs/suite", ["parity"], ["mamba-3l"])[0].config()
    assert (full.n_train, full.n_test, full.d_model, full.epochs) == (10_000, 2_000, 32, 20)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="flipflop"):
        suite.plan("quick", "runs", ["flipflop"])
    with pytest.raises(ValueError, match="unknown variants"):
        suite.plan("quick", "runs", None, ["rnn"])


def test_paper_numbers_cover_the_suite_with_the_published_values():
    assert set(PAPER) == set(languages.names()) - {"flipflop", "dyck"} and len(SUITE) == 27
    for name, row in PAPER.items():
        assert row["class"] in CLASSES and row["class"] == languages.get(name).kind
        for m in MODELS:
            bins = paper_bins(name, m)
            assert list(bins) == (["bin0", "bin1", "bin2"] if row["class"] == "counter" else ["bin0", "bin1"])
            assert all(0 <= v <= 100 for v in bins.values())
    assert paper_bins("parity", "Mamba3") == {"bin0": 91.15, "bin1": 16.7}
    assert paper_bins("d2", "Transformer") == {"bin0": 74.6, "bin1": 3.1}
    assert paper_bins("d12", "Mamba1") == {"bin0": 93.65, "bin1": 93.35}
    assert paper_bins("tomita3", "Mamba2") == {"bin0": 36.88, "bin1": 17.05}
    assert paper_bins("tomita6", "Mamba3") == {"bin0": 54.56, "bin1": 0.04}
    assert paper_bins("aa_star", "Transformer") == {"bin0": 100.0, "bin1": 0.0}
    assert paper_bins("dyck1", "Mamba1") == {"bin0": 100.0, "bin1": 62.6, "bin2": 13.91}
    assert paper_bins("boolean5", "Mamba3") == {"bin0": 99.25, "bin1": 60.7, "bin2": 6.25}
    assert paper_bins("anbncndn", "Transformer") == {"bin0": 100.0, "bin1": 100.0, "bin2": 99.4}
    assert [x for x in SUITE if transformer_pos_encoding(x) == "learned"] == ["tomita4", "tomita6"]
