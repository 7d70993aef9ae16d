"""The suite on the paper's stored strings (``python -m trained_models.suite --paper-data REPO``): its own
folders, runs keyed by the stored data rather than the clone's path, and a report that sets each cell beside
the same cell on our sampler's strings. Also: the runs already saved on our strings keep their identity."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

import languages
from _paper_repo import fake_paper_repo
from languages.paper import stored_commit, stored_fingerprint
from trained_models import executors, suite, suite_plan, suite_report

LANG, VARIANT = "d2", "mamba-1l"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Stored D_2 splits of sizes that tell them from the sampler's: bin1 holds 10 strings (the quick budget
    asks 16 a bin), train 40 (it asks 64)."""
    lang = languages.get(LANG)
    splits = {"train": lang.sample(40, 2, 20, seed=3),
              "bin0": lang.sample(30, 2, 20, seed=1), "bin1": lang.sample(10, 22, 30, seed=2)}
    return fake_paper_repo(tmp_path_factory.mktemp("paper"), LANG, splits), splits


@pytest.fixture(scope="module")
def bigger(tmp_path_factory):
    """Stored D_2 splits with 200 training strings: several optimiser steps a run at the quick budget."""
    lang = languages.get(LANG)
    splits = {"train": lang.sample(200, 2, 20, seed=5), "bin0": lang.sample(20, 2, 20, seed=6),
              "bin1": lang.sample(10, 22, 30, seed=7)}
    return fake_paper_repo(tmp_path_factory.mktemp("bigger"), LANG, splits)


@pytest.fixture(scope="module")
def both(stored, tmp_path_factory):
    """One cell trained on our strings and on the paper's (quick budget, seed 0), one report each."""
    repo, splits = stored
    root = tmp_path_factory.mktemp("suite")
    argv = ["--budget", "quick", "--seeds", "1", "--languages", LANG, "--models", VARIANT,
            "--out", str(root / "results"), "--runs-dir", str(root / "runs")]
    assert suite.main(argv) == 0
    assert suite.main(argv + ["--paper-data", str(repo)]) == 0
    return root, argv, repo, splits


def test_paper_data_runs_live_in_their_own_folder_and_use_the_stored_strings(both):
    root, _, repo, splits = both
    res = json.loads((root / "runs" / "quick-paper-data" / LANG / f"{VARIANT}.json").read_text())
    ours = json.loads((root / "runs" / "quick" / LANG / f"{VARIANT}.json").read_text())
    assert res["data"] == "paper" and ours["data"] == "sampled"
    assert res["train_config"]["paper_data"] == str(repo.resolve()) and ours["train_config"]["paper_data"] is None
    # The stored bins' sizes, not the sampler's: bin1 holds 10 strings; train is what is left of the stored
    # training strings once dev (16) is set aside.
    assert res["n_test"] == {"bin0": 16, "bin1": 10} and ours["n_test"] == {"bin0": 16, "bin1": 16}
    held = set(splits["bin0"]) | set(splits["bin1"])
    assert res["n_train"] == len([x for x in splits["train"] if x not in held]) - 16
    # the run is keyed by the stored strings' digest; the clone's path is nowhere in its identity
    ident = res["identity"]
    assert ident["data"] == "paper:" + suite_plan.paper_data_fingerprint(repo, LANG)
    assert stored_fingerprint(repo, LANG) != suite_plan.paper_data_fingerprint(repo, LANG)  # strings and targets
    assert str(repo) not in json.dumps(ident) and suite_plan.PAPER_REPO in ident["argv"]
    # the same plan but for --paper-data and the step count, which follows the (stored) training set's size
    paper_argv, our_argv = ident["argv"], ours["identity"]["argv"]
    assert paper_argv[-2:] == ["--paper-data", suite_plan.PAPER_REPO] and len(paper_argv) == len(our_argv) + 2
    differ = {paper_argv[i - 1] for i, (a, b) in enumerate(zip(paper_argv, our_argv)) if a != b}
    assert differ == {"--max-steps"}
    assert int(paper_argv[paper_argv.index("--max-steps") + 1]) == res["steps"] < int(
        our_argv[our_argv.index("--max-steps") + 1])


def test_the_report_sets_each_cell_beside_the_same_cell_on_our_strings(both):
    root, _, repo, _ = both
    folder = root / "results" / "quick-paper-data"
    md = (folder / "suite.md").read_text()
    res = json.loads((root / "runs" / "quick-paper-data" / LANG / f"{VARIANT}.json").read_text())
    ours = json.loads((root / "runs" / "quick" / LANG / f"{VARIANT}.json").read_text())
    assert md.startswith("# The Bhattamishra suite on the paper's stored strings")
    assert f"commit `{stored_commit(repo)[:12]}`" in md and "--paper-data REPO" in md
    assert "Counting only the 1 variant with runs (Mamba 1L) on the 1 language with runs (`d2`): 1 of 1 done." in md
    row = next(line for line in md.splitlines() if line.startswith(f"| `{LANG}` | Mamba 1L |"))
    cells = [c.strip() for c in row.strip("|").split("|")]

    def text(r):
        return " / ".join(suite_report._fmt(r["strict"][b]) for b in ("bin0", "bin1")) + " (n=1)"

    assert cells[2:] == [text(ours), text(res), "100 / 100"]  # ours on ours, ours on the paper's, the paper's
    # each report links the other (the sampled one was written first, so it links once re-rendered)
    assert "The same plan on our sampler's strings: [`quick/suite.md`](../quick/suite.md)." in md
    suite_report.write_report(root / "results", root / "runs", "quick", seeds=1, figures=False)
    assert ("The same plan on the paper's stored strings: [`quick-paper-data/suite.md`](../quick-paper-data/suite.md)."
            in (root / "results" / "quick" / "suite.md").read_text())
    with open(folder / "suite.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["data"] for r in rows} == {"paper"}
    done = [r for r in rows if r["status"] == "done"]
    assert [(r["language"], r["variant"]) for r in done] == [(LANG, VARIANT)]
    with open(root / "results" / "quick" / "suite.csv") as fh:
        assert {r["data"] for r in csv.DictReader(fh)} == {"sampled"}


def test_a_clone_elsewhere_resumes_and_other_stored_data_make_the_result_stale(both, tmp_path, capsys):
    root, argv, repo, _ = both
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    result = root / "runs" / "quick-paper-data" / LANG / f"{VARIANT}.json"
    before = result.read_bytes()
    capsys.readouterr()
    assert suite.main(argv + ["--paper-data", str(clone)]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert (summary["trained"], summary["skipped"]) == (0, 1) and result.read_bytes() == before
    # one stored string changed: the digest moves, so the saved result is no longer this run's
    f = clone / "generated_ds" / "D-2" / "val_src_bin1.txt"
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines[:-1] + ["ab"]) + "\n")
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["commit", "-qam", "edit"], check=True)
    assert stored_fingerprint(clone, LANG) != stored_fingerprint(repo, LANG)
    (run,) = suite.plan("quick", root / "runs", [LANG], [VARIANT], paper_data=clone)
    assert run.status() == "stale"
    (same,) = suite.plan("quick", root / "runs", [LANG], [VARIANT], paper_data=repo)
    assert same.status() == "done"


def test_a_report_of_other_data_is_never_overwritten(tmp_path):
    folder = tmp_path / "quick-paper-data"
    folder.mkdir()
    (folder / "suite.csv").write_text("language,budget,data\nd2,quick,sampled\n")
    with pytest.raises(suite_report.ReportConflict, match="quick \\(sampled strings\\)"):
        suite_report.check_report_target(tmp_path, "quick", paper_data=True)
    (tmp_path / "quick").mkdir()
    (tmp_path / "quick" / "suite.csv").write_text("language,budget\nd2,quick\n")  # before the data column
    assert suite_report.check_report_target(tmp_path, "quick") == tmp_path / "quick"
    with pytest.raises(suite_report.ReportConflict):
        (tmp_path / "quick" / "suite.csv").write_text("language,budget,data\nd2,quick,paper\n")
        suite_report.check_report_target(tmp_path, "quick")


def test_the_committed_runs_on_our_strings_keep_their_identity():
    """Every result committed under runs/suite/medium is still collected as its run's (``--paper-data`` changed
    how a run's arguments and identity are built; a run on our strings must be untouched)."""
    results = sorted((ROOT / "runs" / "suite" / "medium").glob("*/*.json"))
    results = [p for p in results if not p.name.endswith(".failed.json")]
    assert len(results) >= 160
    for p in results:
        saved = json.loads(p.read_text())
        run = suite_plan.Run(saved["language"], saved["variant"], "medium", str(ROOT / "runs" / "suite"),
                             saved["seed"])
        assert run.result_path == p and run.status() == "done", p
        assert "--paper-data" not in run.argv()


def test_the_comparison_puts_each_side_in_its_column():
    def cell(lang, variant, *pairs):
        c = suite_report.Cell(lang, variant)
        c.runs = {seed: {"strict": {"bin0": b0, "bin1": b1}, "stop_reason": "reached target"}
                  for seed, (b0, b1) in enumerate(pairs)}
        return c

    empty = suite_report.collect("/nonexistent", "quick", 1)
    paper_cells, sampled = dict(empty), dict(suite_report.collect("/nonexistent", "quick", 1))
    paper_cells[("d4", "mamba-2l")] = cell("d4", "mamba-2l", (100.0, 100.0), (100.0, 98.0))
    sampled[("d4", "mamba-2l")] = cell("d4", "mamba-2l", (96.0, 80.0))
    paper_cells[("d4", "transformer")] = cell("d4", "transformer", (100.0, 100.0))
    lines = suite_report.data_comparison_lines(paper_cells, sampled, "quick")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| `")]
    assert rows[0] == ["`d4`", "Mamba 2L", "96.0 / 80.0 (n=1)", "100 [100–100] / 99.0 [86.3–100] (n=2)", "100 / 100"]
    assert rows[1] == ["`d4`", "Transformer 2L", "–", "100 / 100 (n=1)", "90.2 / 3.3"]  # not run on our strings
    assert len(rows) == 2  # only the cells run on the paper's strings


def _commit(repo, message):
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["commit", "-qam", message], check=True)


def _interrupt(run, steps=2):
    """A run the suite began and a session stopped after ``steps`` optimiser steps."""
    from trained_models.training import train

    run.begin()
    cfg = run.config()
    cfg.max_steps = steps
    train(cfg, run.train_dir, resume=True, command=run.command(), progress=False)
    assert not run.result_path.exists() and run.status() == "pending"


def test_an_interrupted_run_resumes_from_another_clone_of_the_same_data(bigger, tmp_path):
    repo = bigger
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    (ref,) = suite.plan("quick", tmp_path / "ref", [LANG], [VARIANT], paper_data=repo)
    assert executors.run_suite([ref])["trained"] == 1
    (begun,) = suite.plan("quick", tmp_path / "cut", [LANG], [VARIANT], paper_data=repo)
    _interrupt(begun)
    (resumed,) = suite.plan("quick", tmp_path / "cut", [LANG], [VARIANT], paper_data=clone)
    assert resumed.identity() == begun.identity() and resumed.status() == "pending"
    out = executors.run_suite([resumed])
    assert (out["trained"], out["failed"]) == (1, 0), out["failures"]
    got, want = (json.loads(r.result_path.read_text()) for r in (resumed, ref))
    assert got["metrics"] == want["metrics"] and got["steps"] == want["steps"] > 2  # as if never interrupted
    assert json.loads((resumed.train_dir / "train_config.json").read_text())["paper_data"] == str(clone.resolve())


def test_a_run_begun_on_other_stored_data_is_stale_and_retrained(bigger, tmp_path):
    repo = bigger
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    (run,) = suite.plan("quick", tmp_path / "runs", [LANG], [VARIANT], paper_data=clone)
    _interrupt(run)
    steps_before = run.argv()[run.argv().index("--max-steps") + 1]
    size_before = run.train_size()
    # the clone moves on: its stored training file keeps 50 of its 200 strings
    f = clone / "generated_ds" / "D-2" / "train_src.txt"
    lines = f.read_text().splitlines()
    f.write_text("".join(x + "\n" for x in lines[:50]))
    _commit(clone, "fewer training strings")
    # the same process sees the new data everywhere: the digest, the training-set size and the step budget
    assert run.status() == "stale"
    assert run.argv()[run.argv().index("--max-steps") + 1] != steps_before
    assert executors.run_suite([run])["trained"] == 1 and run.status() == "done"
    (moved,) = (run.result_path.parent / "stale").iterdir()
    assert (moved / run.train_dir.name / "suite_identity.json").exists()  # the begun folder, kept aside
    assert json.loads(run.result_path.read_text())["n_train"] <= 50 - 16 < size_before


def test_the_identity_follows_our_targets_on_the_stored_strings(stored, monkeypatch):
    repo, _ = stored
    (run,) = suite.plan("quick", "/nonexistent", [LANG], [VARIANT], paper_data=repo)
    before = run.identity()
    real = languages.get(LANG)

    class OtherTargets:  # D_2 with END never allowed: other targets on the same strings
        def __getattr__(self, name):
            return getattr(real, name)

        def allowed_next(self, s):
            return [set(a) - {languages.END} for a in real.allowed_next(s)]

    monkeypatch.setattr(suite_plan._languages, "get", lambda name, **kw: OtherTargets())
    suite_plan._paper_data_fingerprint.cache_clear()
    try:
        after = run.identity()
    finally:
        suite_plan._paper_data_fingerprint.cache_clear()
    assert after["argv"] == before["argv"] and after["data"] != before["data"]


def test_fit_check_reads_the_stored_strings_from_the_clone_it_is_given(bigger, tmp_path):
    """A run on the paper's strings is scored on its own training strings from the clone given now: the one
    it was trained from may be gone (the suite resumes from any clone of the same data)."""
    from trained_models import suite_fit

    first = tmp_path / "first"
    subprocess.run(["git", "clone", "-q", str(bigger), str(first)], check=True)
    runs = tmp_path / "runs"
    argv = ["--budget", "quick", "--seeds", "1", "--languages", LANG, "--models", VARIANT, "--runs-dir", str(runs),
            "--out", str(tmp_path / "results")]
    assert suite.main(argv + ["--paper-data", str(first)]) == 0
    (run,) = suite.plan("quick", runs, [LANG], [VARIANT], paper_data=first)
    before = suite_fit.measure(run)
    second = tmp_path / "second"
    first.rename(second)
    (moved,) = suite.plan("quick", runs, [LANG], [VARIANT], paper_data=second)
    assert moved.status() == "done" and suite_fit.measure(moved) == before
    assert before["train_n"] == run.saved()["n_train"]
