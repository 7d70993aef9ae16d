"""``analyses.dn_depth``: maximal depth by hand, the per-depth breakdown adds up to the strict accuracy,
and the report on a tiny D_2 run with a stand-in for the paper's data."""
from __future__ import annotations

import numpy as np
import pytest

import languages
from _paper_repo import fake_paper_repo
from analyses import dn_depth
from trained_models.evaluate import evaluate_strings
from trained_models.registry import load
from trained_models.train import main as train_main


@pytest.mark.parametrize("s,depth", [("", 0), ("ab", 1), ("abab", 1), ("aabb", 2), ("aabab", 2), ("aababb", 2),
                                     ("aaabbbab", 3), ("abaabbaaabbb", 3)])
def test_max_depth_by_hand(s, depth):
    assert dn_depth.max_depth(s) == depth


def test_by_depth_counts_every_string_once():
    strings = ["ab", "aabb", "abab", "aabb"]
    parts = dn_depth.by_depth(np.array([True, False, False, True]), strings)
    assert parts == {1: (0.5, 2), 2: (0.5, 2)}


@pytest.fixture(scope="module")
def d2_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dn")
    assert train_main(["--language", "d2", "--layers", "1", "--d-model", "16", "--d-state", "4", "--n-train", "200",
                       "--n-dev", "16", "--n-test", "40", "--batch-size", "16", "--epochs", "4", "--lr", "0.01",
                       "--min-len", "2", "--max-len", "16", "--test-window", "bin0=2:16", "--test-window",
                       "bin1=18:30", "--threads", "1", "--no-progress", "--out", str(root / "runs" / "d2")]) == 0
    lang = languages.get("d2")
    stored = {"train": lang.sample(50, 2, 16, seed=7), "bin0": lang.sample(30, 2, 16, seed=8),
              "bin1": lang.sample(20, 18, 30, seed=9)}
    return root, fake_paper_repo(root / "paper", "d2", stored), stored


def test_breakdown_adds_up_to_the_strict_accuracy(d2_run):
    root, repo, stored = d2_run
    r = dn_depth.measure_run(root / "runs" / "d2", stored)
    model, card = load(root / "runs" / "d2")
    for b in ("bin0", "bin1"):
        acc, parts = r["bins"][("sampled", b)]
        assert acc == pytest.approx(card["metrics"][b]["strict_accuracy"])
        assert sum(n for _, n in parts.values()) == card["metrics"][b]["n"]
        assert sum(a * n for a, n in parts.values()) / card["metrics"][b]["n"] == pytest.approx(acc)
        acc, parts = r["bins"][("paper's", b)]
        assert acc == pytest.approx(evaluate_strings(model, languages.get("d2"), stored[b])["strict_accuracy"])
    assert any(0 < r["bins"][("sampled", b)][0] < 1 for b in ("bin0", "bin1"))  # a score that could disagree


def test_cli_writes_the_report(d2_run, capsys):
    root, repo, stored = d2_run
    out = root / "dn.md"
    assert dn_depth.main(["--runs", str(root / "runs"), "--paper-data", str(repo), "--out", str(out)]) == 0
    md = out.read_text()
    assert "## d2" in md and "| paper's stored train |" in md and "| ours train, seed 0 |" in md
    assert dn_depth.main(["--runs", str(root / "nowhere"), "--out", str(out)]) == 2
    assert "no trained runs" in capsys.readouterr().err


def test_trained_runs_skips_a_run_still_training(d2_run, tmp_path):
    import json
    import shutil

    from trained_models.run_folder import trained_runs
    root, _, _ = d2_run
    shutil.copytree(root / "runs" / "d2", tmp_path / "done")
    shutil.copytree(root / "runs" / "d2", tmp_path / "training")
    card = json.loads((tmp_path / "training" / "card.json").read_text())
    card.pop("metrics")
    (tmp_path / "training" / "card.json").write_text(json.dumps(card))
    (tmp_path / "not-a-run").mkdir()
    assert trained_runs(tmp_path) == [tmp_path / "done"] and trained_runs(tmp_path / "nowhere") == []


@pytest.mark.parametrize("s,n,count", [("", 2, 0), ("ab", 1, 1), ("abab", 1, 2), ("aabab", 2, 2), ("aabb", 1, 2),
                                       ("aaaabababa", 4, 4), ("aabb", 3, 0)])
def test_top_positions_by_hand(s, n, count):
    assert dn_depth.top_positions(s, n) == count


def test_by_top_buckets_add_up():
    strings = ["ab", "abab", "ababababab", "aabb"]
    parts = dn_depth.by_top(np.array([True, True, False, True]), strings, 1)
    assert [k for _, k in parts] == [0, 3, 1, 0, 0, 0]  # 1, 2 and 2 positions at depth 1; then 5
    assert parts[1] == (1.0, 3) and parts[2] == (0.0, 1) and np.isnan(parts[0][0])


def test_a_run_on_the_papers_strings_is_also_scored_on_sampled_ones(d2_run, tmp_path):
    root, repo, stored = d2_run
    out = tmp_path / "paper_run"
    assert train_main(["--language", "d2", "--layers", "1", "--d-model", "8", "--d-state", "4", "--n-train", "40",
                       "--n-dev", "8", "--n-test", "10", "--batch-size", "8", "--epochs", "1", "--threads", "1",
                       "--no-progress", "--paper-data", str(repo), "--out", str(out)]) == 0  # d2's own windows
    r = dn_depth.measure_run(out, stored)
    assert r["data"] == "paper's"
    model, _ = load(out)
    import dataclasses
    import json as _json

    from trained_models.config import TrainConfig, make_data
    cfg = TrainConfig.from_dict(_json.loads((out / "train_config.json").read_text()))
    sampled = make_data(dataclasses.replace(cfg, paper_data=None), languages.get("d2"))
    own = make_data(cfg, languages.get("d2"))
    for b in ("bin0", "bin1"):
        assert set(sampled[b]) != set(own[b])  # the sampler's bins, not the stored ones the run was tested on
        assert r["tested"][("sampled", b)] == sampled[b] and r["tested"][("paper's", b)] == stored[b]
        acc, parts = r["bins"][("sampled", b)]
        assert sum(n for _, n in parts.values()) == len(sampled[b])
        assert acc == pytest.approx(evaluate_strings(model, languages.get("d2"), sampled[b])["strict_accuracy"])
        assert sum(n for _, n in r["bins"][("paper's", b)][1].values()) == len(stored[b])
