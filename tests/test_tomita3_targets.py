"""``analyses.tomita3_targets``: the parity span by hand, and the re-evaluation of a trained run under both
target sets agrees with what training measured on its own targets."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import languages
from analyses import tomita3_targets as t3
from _paper_repo import fake_paper_repo
from trained_models.train import main as train_main


@pytest.mark.parametrize("s,span", [
    ("", 0), ("0000", 0), ("0111", 0),  # no 1-block followed by a 0
    ("10", 1), ("100", 2), ("1000", 3),  # odd 1-block: the 0-block counts too
    ("110", 2), ("11000", 2), ("1100000", 2),  # even 1-block: only its own length
    ("1110", 3), ("11100000", 5), ("0110111", 2),  # a final 1-block is followed by nothing
    ("1011000", 2), ("1001000", 3), ("11111100", 6),
])
def test_parity_span_by_hand(s, span):
    assert t3.parity_span(s) == span


@pytest.mark.parametrize("s,span", [
    ("", 0), ("0000", 0), ("0111", 3), ("0110", 2), ("1", 1),  # every 1-block counts
    ("1000", 3), ("11000", 2), ("1001110", 3), ("100111", 3), ("1111100", 5),
])
def test_parity_span_on_the_original_targets_by_hand(s, span):
    assert t3.parity_span(s, "paper") == span


def test_the_original_targets_forbid_a_zero_exactly_where_the_paper_span_counts_more():
    """Where the two spans differ, a 1-block that no 0 follows counts: its last position is where the original
    forbids a 0 (odd block) or checks the parity to allow it (even block), so the targets there differ
    exactly when that block is odd."""
    ours, paper = languages.get("tomita3"), languages.get("tomita3", targets="paper")
    for bits in itertools.product("01", repeat=9):
        s = "".join(bits)
        if ours.accepts(s) and s.endswith("1") and "10" not in s:
            trailing = len(s) - len(s.rstrip("1"))
            assert t3.parity_span(s) == 0 and t3.parity_span(s, "paper") == trailing
            assert (ours.allowed_next(s)[-1] != paper.allowed_next(s)[-1]) == (trailing % 2 == 1), s
    with pytest.raises(ValueError, match="targets"):
        t3.parity_span("10", "original")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("t3")
    # short strings and a few hundred steps: scores strictly between 0 and 100, so that agreeing with the card
    # is a real check
    base = ["--language", "tomita3", "--layers", "1", "--d-model", "16", "--d-state", "4", "--n-train", "200",
            "--n-dev", "16", "--n-test", "48", "--batch-size", "16", "--epochs", "8", "--lr", "0.01", "--min-len", "1",
            "--max-len", "8", "--test-window", "bin0=1:8", "--test-window", "bin1=9:12", "--warmup-steps", "1",
            "--threads", "1", "--no-progress"]
    for targets in ("correct", "paper"):
        assert train_main(base + ["--targets", targets, "--out", str(root / "runs" / targets)]) == 0
    return root


def test_reevaluation_matches_the_card_under_the_runs_own_targets(two_runs):
    for targets in ("correct", "paper"):
        r = t3.measure_run(two_runs / "runs" / targets)
        assert r["trained_on"] == targets
        assert any(0 < r["card"][b] < 1 for b in ("bin0", "bin1"))  # a score that could disagree
        for b in ("bin0", "bin1"):
            assert r["strict"][(targets, b)] == pytest.approx(r["card"][b], abs=1e-9)
            assert r["ok"][b].mean() == pytest.approx(r["strict"][(targets, b)])
            assert len(r["spans"][b]) == len(r["ok"][b]) > 0


def test_cli_writes_the_report(two_runs, capsys):
    out = two_runs / "tomita3.md"
    assert t3.main(["--runs", str(two_runs / "runs"), "--out", str(out)]) == 0
    md = out.read_text()
    assert md.count("| correct | Mamba 1L nonnegative | 0 | ours | correct |") == 1
    assert md.count("| paper | Mamba 1L nonnegative | 0 | ours | paper |") == 1
    assert "span 9–16" in md and "parity span" in md
    assert t3.main(["--runs", str(two_runs / "nowhere"), "--out", str(out)]) == 2
    assert "no trained runs" in capsys.readouterr().err


def test_strict_per_string_is_in_the_given_order_and_averages_to_strict_accuracy(two_runs):
    from trained_models.evaluate import evaluate_strings, strict_per_string
    from trained_models.registry import load
    model, _ = load(two_runs / "runs" / "correct")
    lang = languages.get("tomita3")
    strings = lang.sample(40, 1, 30, seed=3)
    ok = strict_per_string(model, lang, strings, batch_size=7)
    rev = strict_per_string(model, lang, strings[::-1], batch_size=5)
    assert np.array_equal(ok, rev[::-1]) and 0 < ok.mean() < 1
    assert ok.mean() == pytest.approx(evaluate_strings(model, lang, strings)["strict_accuracy"])


def test_paper_data_scores_the_stored_strings(two_runs):
    """Stored strings equal to a run's own test bins score what the run scores on them; the span table
    counts every stored string once per target set."""
    r = t3.measure_run(two_runs / "runs" / "correct")
    stored = {"train": r["data"]["train"][:30], "bin0": r["data"]["bin0"], "bin1": r["data"]["bin1"]}
    repo = fake_paper_repo(two_runs / "paper_repo", "tomita3", stored)
    out = two_runs / "with_paper.md"
    assert t3.main(["--runs", str(two_runs / "runs"), "--paper-data", str(repo), "--out", str(out)]) == 0
    again = t3.measure_run(two_runs / "runs" / "correct", stored)
    assert again["stored"] == again["strict"]
    md = out.read_text()
    assert "On the paper's stored test strings" in md
    row = next(x for x in md.splitlines() if x.startswith("| paper's train (paper) |"))
    assert sum(int(c) for c in row.strip("|").split("|")[1:]) == 30
    assert t3.main(["--runs", str(two_runs / "runs"), "--paper-data", str(two_runs / "no_repo"),
                    "--out", str(out)]) == 2
    # languages.paper's readers: a missing split is an error naming it, or no lines when allowed
    from languages.paper import read_stored, stored_split
    assert stored_split(repo, "tomita3", "bin0") == stored["bin0"]
    with pytest.raises(FileNotFoundError, match="val_src_bin2"):
        stored_split(repo, "tomita3", "bin2")
    assert read_stored(repo, "generated_ds/Tomita-3/val_src_bin2.txt", missing_ok=True) == []
    with pytest.raises(ValueError, match="no data for 'flipflop'"):
        stored_split(repo, "flipflop", "bin0")
