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
    assert ident["data"] == "paper:" + stored_fingerprint(repo, LANG)
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
    assert "Counting only the 1 variants with runs (Mamba 1L) on the 1 languages with runs (`d2`): 1 of 1 done." in md
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
