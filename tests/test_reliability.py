"""Nothing lost, nothing silently wrong: each test reproduces a failure seen on an older version.

Losing data: ``train --out`` refuses a folder holding a run unless ``--resume``/``--force``, checks
every argument before writing, refuses ``--out ""``; the checkpoint is one unit (a process killed
between its writes resumes to the same weights as an uninterrupted run); studies write report and
figures together and check ``--out`` before computing; saved files get the umask's permissions.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_inputs import KILL_AFTER_MODEL_WRITE, snapshot as _snapshot  # noqa: E402
from test_trained_models import _tiny_cfg as _tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY_ARGV = ["--language", "dyck", "--K", "2", "--h", "3", "--layers", "1", "--d-model", "8", "--d-state", "4",
             "--n-train", "64", "--n-dev", "16", "--n-test", "16", "--batch-size", "16", "--epochs", "2",
             "--min-len", "2", "--max-len", "16", "--test-window", "bin0=2:16", "--test-window", "bin1=18:30",
             "--warmup-steps", "2", "--threads", "1", "--no-progress"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from trained_models import load

    model, _ = load(run)
    return {k: v.clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- train --out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from trained_models.training import train

    run = tmp_path_factory.mktemp("runs") / "anbn"
    train(_tiny(language="anbn", language_params={}, train_window=None, test_windows=None, n_train=20,
                n_dev=8, n_test=8, batch_size=8), run, progress=False, command="first")
    return run


def test_train_refuses_an_out_that_holds_a_run_and_changes_nothing(finished_run, capsys):
    from trained_models.train import main

    before = _snapshot(finished_run)
    rc = main(TINY_ARGV + ["--out", str(finished_run)])  # another language, same folder
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "--out" in err and "already holds a run of anbn" in err and "--resume" in err and "--force" in err
    assert _snapshot(finished_run) == before  # old main: card, weights and checkpoint overwritten


def test_a_failing_command_writes_nothing(finished_run, tmp_path, capsys):
    from trained_models.train import main

    before = _snapshot(finished_run)
    # Old main: train_config.json rewritten, then ZeroDivisionError (the run could no longer resume).
    for extra in (["--evals-per-epoch", "0"], ["--evals-per-epoch", "0", "--force"],
                  ["--min-len", "3", "--max-len", "3", "--force"],  # a^n b^n has no string of length 3
                  ["--resume", "--d-model", "16"]):  # a config that differs from the saved run's
        argv = ["--language", "anbn", "--n-train", "20", "--n-dev", "8", "--n-test", "8", "--batch-size", "8",
                "--no-progress", "--out", str(finished_run)] + extra
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (extra, err)
        assert _snapshot(finished_run) == before, extra
    assert main(TINY_ARGV + ["--evals-per-epoch", "0", "--out", str(tmp_path / "new")]) == 2
    assert "--evals-per-epoch" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_rerunning_a_killed_run_without_resume_is_refused_and_force_starts_over(tmp_path, capsys):
    from trained_models.train import main
    from trained_models.training import train

    run = tmp_path / "run"
    train(_tiny(max_minutes=1e-9), run, progress=False)  # "killed" after its first step
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == 1
    before = _snapshot(run)
    assert main(TINY_ARGV + ["--out", str(run)]) == 2  # old main: restarted from step 0 over it
    assert "already holds a run of dyck" in capsys.readouterr().err
    assert _snapshot(run) == before
    assert main(TINY_ARGV + ["--resume", "--force", "--out", str(run)]) == 2
    assert main(TINY_ARGV + ["--force", "--out", str(run)]) == 0
    assert json.loads((run / "card.json").read_text())["finished"]


def test_empty_out_is_not_the_current_directory(tmp_path, monkeypatch, capsys):
    from trained_models.train import main
    from trained_models.training import train

    monkeypatch.chdir(tmp_path)
    assert main(TINY_ARGV + ["--out", ""]) == 2
    assert "--out" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--out must name a folder"):
        train(_tiny(), "", progress=False)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- checkpoint as one unit


@pytest.mark.parametrize("when", ["inside", "between_renames"])
def test_a_process_killed_while_writing_the_checkpoint_resumes_to_the_uninterrupted_weights(tmp_path, when):
    from trained_models.training import train

    cfg = _tiny(epochs=3, evals_per_epoch=2)
    train(cfg, tmp_path / "full", progress=False)
    run = tmp_path / "killed"
    if when == "inside":
        # Killed right after the second checkpoint's model tensors were written (before optim/state:
        # the old main then resumed from the new model with the old optimiser and step).
        env = {**os.environ, "CFG": json.dumps(cfg.to_dict()), "OMP_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, "-c", KILL_AFTER_MODEL_WRITE, str(run), "2"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 9, r.stderr[-2000:]
    else:
        # Killed between moving the old checkpoint aside and moving the new one in.
        import languages.io as io

        train(_tiny(epochs=3, evals_per_epoch=2, max_minutes=1e-9), run, progress=False)
        ck = run / "checkpoint"
        os.replace(ck, run / ".checkpoint.old")
        assert not ck.exists()
        io.recover_dir(ck)
        assert (ck / "state.json").exists()
    train(cfg, run, resume=True, progress=False)
    full, resumed = _weights(tmp_path / "full"), _weights(run)
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_staged_dir_keeps_the_old_directory_whole_when_the_writer_fails(tmp_path):
    from languages.io import StagedDir

    out = tmp_path / "d"
    with StagedDir(out) as s:
        (s.dir / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with StagedDir(out) as s:
            (s.dir / "a.txt").write_text("new")
            (s.dir / "b.txt").write_text("new")
            raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"] and (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no staging folder left behind


# --------------------------------------------------------------------------- studies


def _parity_run(out: Path, seed: int = 0):
    from analyses import parity_probe as pp

    st = pp.Settings.quick(n=8, probe_train=16, probe_test=8, probe_positions=200, test_positions=100,
                           ood_positions=100, T=200, bins={"bin0": (2, 20), "bin1": (21, 40)}, seed=seed)
    return pp.run([], st, out, progress=False)


def test_an_interrupted_study_leaves_the_previous_report_and_figures_together(tmp_path, monkeypatch):
    import analyses.study as study

    out = tmp_path / "parity"
    first = _parity_run(out)
    figs = sorted(p.name for p in out.iterdir())
    assert "report.json" in figs and len(first["figures"]) >= 1
    assert all(Path(f).parent == out and Path(f).exists() for f in first["figures"])
    before = _snapshot(out)

    def killed(*a, **k):
        raise KeyboardInterrupt  # the run dies after its figures, before its report

    monkeypatch.setattr(study, "write_report", killed)
    with pytest.raises(KeyboardInterrupt):
        _parity_run(out, seed=1)  # other figures than the first run's
    assert _snapshot(out) == before  # old main: new figures beside the old report
    monkeypatch.undo()
    assert study.check_study_out(out) == out  # a previous run's outputs may be replaced


def test_a_study_checks_out_before_computing(tmp_path, monkeypatch):
    import analyses.parity_probe as pp

    monkeypatch.setattr(pp, "load_all", lambda names: pytest.fail("computed before checking --out"))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        _parity_run(tmp_path)  # a folder with someone's files is never replaced
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        _parity_run(tmp_path / "file" / "out")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root: the kernel grants the write, so deny it where the check asks
            import languages.io as tio

            real = os.access
            monkeypatch.setattr(tio.os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode))
        with pytest.raises(PermissionError, match="cannot write"):
            _parity_run(ro / "out")
    finally:
        ro.chmod(0o700)


# --------------------------------------------------------------------------- permissions


def test_saved_files_get_the_umask_permissions_not_0600(tmp_path):
    from languages.io import atomic_write_json, atomic_write_dir

    old = os.umask(0o022)
    try:
        p = atomic_write_json(tmp_path / "x.json", {"a": 1})
        d = atomic_write_dir(tmp_path / "d", lambda tmp: atomic_write_json(tmp / "y.json", {}))
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644  # old main: 0o600 from mkstemp
    assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert stat.S_IMODE((d / "y.json").stat().st_mode) == 0o644


# --------------------------------------------------------------------------- --max-minutes


def test_a_run_stopped_by_its_time_budget_leaves_a_loadable_evaluated_card(tmp_path, capsys):
    from trained_models import load
    from trained_models.train import main

    run = tmp_path / "run"
    # Old main: no evaluation, no card, not loadable; `--resume --finish` said "no evaluated checkpoint".
    assert main(TINY_ARGV + ["--max-minutes", "1e-9", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "Continue with: python -m trained_models.train" in err and "--resume" in err
    model, card = load(run)
    assert card["finished"] is False and card["steps"] == 1 and "last weights" in card["weights_selected"]
    assert set(card["metrics"]) == {"bin0", "bin1"} and 0 <= card["metrics"]["bin0"]["strict_accuracy"] <= 1
    assert main(TINY_ARGV + ["--resume", "--finish", "--out", str(run)]) == 0
    card = json.loads((run / "card.json").read_text())
    assert card["finished"] and card["stop_reason"].startswith("finished early by request at step 1")


def test_the_cpu_time_budget_counts_this_process_not_the_wall_clock(tmp_path, monkeypatch):
    import time as _time

    from trained_models.train import main

    # A wall clock racing ahead (what a loaded machine looks like to one process) does not stop a run
    # capped in CPU minutes: only its own CPU time does.
    clock = iter(range(0, 10**9, 3600))
    monkeypatch.setattr(_time, "time", lambda: float(next(clock)))
    assert main(TINY_ARGV + ["--max-cpu-minutes", "1000", "--out", str(tmp_path / "a")]) == 0
    card = json.loads((tmp_path / "a" / "card.json").read_text())
    assert card["finished"] and not card["stop_reason"].startswith(("wall", "CPU"))
    monkeypatch.undo()
    # A CPU cap that runs out after the first step stops it as --max-minutes does, and --resume goes on.
    assert main(TINY_ARGV + ["--max-cpu-minutes", "1e-9", "--out", str(tmp_path / "b")]) == 0
    card = json.loads((tmp_path / "b" / "card.json").read_text())
    assert (card["finished"], card["steps"], card["stop_reason"]) == (False, 1, "CPU budget 1e-09 min")
    assert main(TINY_ARGV + ["--resume", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "card.json").read_text())["finished"] is True


def test_train_help_shows_defaults_and_the_languages(capsys):
    import languages
    from trained_models.train import main

    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch-size BATCH_SIZE default: 32" in text and "--lr LR default: 0.001" in text
    assert "--seed SEED default: 0" in text
    assert all(name in text for name in languages.names())
    assert "each --resume gets a new one" in text  # --max-minutes is per invocation
