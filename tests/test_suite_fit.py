"""``suite --fit-check``: each departing run scored on its own training strings (:mod:`trained_models.suite_fit`),
checked against ``evaluate --own-split train`` and kept per run identity in the report folder's ``fit.csv``."""
import csv
import json

import pytest

from trained_models import suite, suite_fit, suite_patterns
from trained_models.evaluate import main as evaluate_main
from trained_models.suite_plan import Run
from trained_models.suite_report import Cell, collect

LANG, VARIANT = "anbn", "mamba-1l"  # quick budget: the cell departs (a counter language unfitted in seconds)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    argv = ["--budget", "quick", "--seeds", "2", "--languages", LANG, "--models", VARIANT,
            "--out", str(root / "results"), "--runs-dir", str(root / "runs")]
    assert suite.main(argv) == 0
    return root, argv


def _runs(root):
    return [Run(LANG, VARIANT, "quick", str(root / "runs"), seed=s) for s in (0, 1)]


def test_the_fit_is_what_evaluate_own_split_train_gives(quick, capsys):
    root, _ = quick
    for run in _runs(root):
        row = suite_fit.measure(run)
        capsys.readouterr()
        assert evaluate_main(["--model", str(run.train_dir), "--own-split", "train", "--json"]) == 0
        got = json.loads(capsys.readouterr().out)  # one split: the object is that split's
        assert row["train_n"] == got["n"]
        assert row["train_strict"] == pytest.approx(100 * got["strict_accuracy"], abs=0.005)
        assert row["train_n"] == run.saved()["n_train"]  # the strings training used, as many as it recorded
        assert row["result"] == suite_fit.digest(run.saved())


def test_fit_check_measures_the_departing_runs_once_and_the_report_shows_them(quick, monkeypatch, capsys):
    root, argv = quick
    cells = collect(root / "runs", "quick", 2)
    assert [(x, v) for x, _, v, _, _ in suite_patterns.departures(cells)] == [(LANG, VARIANT)]
    assert suite.main(argv + ["--report-only", "--fit-check"]) == 0
    path = root / "results" / "quick" / suite_fit.FIT_CSV
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["language"], r["variant"], r["seed"]) for r in rows] == [(LANG, VARIANT, "0"), (LANG, VARIANT, "1")]
    md = (root / "results" / "quick" / "suite.md").read_text()
    fits = suite_fit.read_fits(root / "results" / "quick")
    want = ", ".join(f"s{s} {fits[(LANG, VARIANT, s)]['train_strict']:.1f}" for s in (0, 1))
    row = next(x for x in md.splitlines() if x.startswith(f"| `{LANG}` |"))
    assert f"| {want} |" in row and "| fits train |" in md
    # a second call measures nothing: every row holds for its run's result
    monkeypatch.setattr(suite_fit, "measure", lambda run: pytest.fail(f"measured {run.name} again"))
    assert suite.main(argv + ["--report-only", "--fit-check"]) == 0
    monkeypatch.undo()
    # a seed beyond --seeds that the report shows is measured too
    path.unlink()
    one = [a if a != "2" else "1" for a in argv]  # --seeds 1
    assert suite.main(one + ["--report-only", "--fit-check"]) == 0
    assert set(suite_fit.read_fits(root / "results" / "quick")) == {(LANG, VARIANT, 0), (LANG, VARIANT, 1)}


def test_a_row_made_for_another_result_is_measured_again_and_a_missing_folder_is_named(quick, tmp_path):
    root, _ = quick
    runs = _runs(root)
    fits = {}
    for run in runs:
        fits[(LANG, VARIANT, run.seed)] = {"language": LANG, "variant": VARIANT, "seed": run.seed,
                                           "result": "0" * 16, "train_strict": 12.5, "train_n": 3}
    suite_fit.write_fits(tmp_path, fits)
    assert suite_fit.of_result(suite_fit.read_fits(tmp_path), (LANG, VARIANT, 0), runs[0].saved()) is None  # not its
    logged = []
    got = suite_fit.update_fits(runs, tmp_path, log=logged.append)
    assert all(got[(LANG, VARIANT, r.seed)]["result"] == suite_fit.digest(r.saved()) for r in runs)
    assert suite_fit.read_fits(tmp_path) == got and len(logged) == 2
    # a finished run whose training folder is gone (a fresh clone: folders are not committed) is named, not measured
    gone = Run(LANG, VARIANT, "quick", str(root / "runs"), seed=0)
    moved = gone.train_dir.with_name(gone.train_dir.name + ".away")
    gone.train_dir.rename(moved)
    try:
        logged.clear()
        suite_fit.write_fits(tmp_path, {})
        suite_fit.update_fits([gone], tmp_path, log=logged.append)
        assert suite_fit.read_fits(tmp_path) == {} and "no training folder" in logged[0] and gone.name in logged[0]
    finally:
        moved.rename(gone.train_dir)


@pytest.mark.parametrize("text,names", [
    ("language,variant,seed,accuracy\nd2,mamba-1l,0,99\n", "expected the columns"),
    ("", "expected the columns"),
    ("language,variant,seed,result,train_strict,train_n\nd2,mamba-1l,0,ab,,5000\n", "line 2: not a fit row"),
    ("language,variant,seed,result,train_strict,train_n\nd2,mamba-1l,0,ab,99.1,5000\nd2,mamba-1l\n",
     "line 3: not a fit row"),
    ("language,variant,seed,result,train_strict,train_n\nd2,mamba-1l,0,ab,140,5000\n", "line 2: not a fit row"),
])
def test_a_malformed_fit_file_is_an_error_that_names_it_and_the_line(tmp_path, text, names):
    (tmp_path / suite_fit.FIT_CSV).write_text(text)
    with pytest.raises(ValueError, match=names) as e:
        suite_fit.read_fits(tmp_path)
    assert str(tmp_path / suite_fit.FIT_CSV) in str(e.value)


def test_the_column_shows_each_seed_in_order_and_only_where_measured():
    from trained_models.suite_report import SUITE, VARIANTS

    cells = {(x, v): Cell(x, v) for x in SUITE for v in VARIANTS}
    for s, b0 in enumerate((60.0, 70.0, 80.0)):
        cells[("shuffle4", "mamba-2l")].runs[s] = {"identity": {"argv": ["a", str(s)], "data": "x"}, "steps": 9,
                                                  "strict": {"bin0": b0, "bin1": 5.0},
                                                  "stop_reason": "step budget reached"}
    res = [cells[("shuffle4", "mamba-2l")].runs[s] for s in range(3)]
    plain = suite_patterns.departure_lines(cells)
    assert not any("| fits train |" in x for x in plain)  # nothing measured: no column
    fits = {("shuffle4", "mamba-2l", 0): {"result": suite_fit.digest(res[0]), "train_strict": 71.25},
            ("shuffle4", "mamba-2l", 2): {"result": suite_fit.digest(res[2]), "train_strict": 88.0},
            ("shuffle4", "mamba-2l", 1): {"result": suite_fit.digest(res[0]), "train_strict": 99.0}}  # another's
    lines = suite_patterns.departure_lines(cells, fits=fits)
    row = next(x for x in lines if x.startswith("| `shuffle4` |"))
    assert "| s0 71.2, s1 –, s2 88.0 |" in row or "| s0 71.3, s1 –, s2 88.0 |" in row
    # a result retrained under the same arguments (other steps or scores) is not the measured one
    assert suite_fit.of_result(fits, ("shuffle4", "mamba-2l", 0), {**res[0], "steps": 10}) is None
