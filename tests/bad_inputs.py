"""Bad inputs for every command line (and a few API calls), and what each one does.

The table is shared by ``tests/test_bad_inputs.py`` (every case must end with exit code 2 and one
line on stderr naming the argument) and by the measurement below, which also runs on an older checkout
to give before/after counts::

    python tests/bad_inputs.py                         # this checkout
    PYTHONPATH=/tmp/old python tests/bad_inputs.py     # another one (its packages first on the path)

Each CLI is called in-process through its ``main(argv)`` (no subprocess start-up), stdout/stderr
captured, under a wall-clock alarm (a bad input still running after ``--timeout`` seconds was
accepted). Outcomes: ``clear`` (exit 2, one line, names the argument, no traceback), ``traceback``
(an exception escaped ``main``), ``silent`` (exit 0, or still running at the alarm: the input was
accepted), ``unclear`` (any other exit or a message that is not one line naming the argument).
Damaged checkpoints are made from a shipped model into a temporary folder; every output goes there
too (``--out``, ``--runs-dir``, ``--root``), so nothing in the checkout is touched. The data-loss
scenarios (:func:`data_loss_scenarios`) replay the "Losing data" items and report whether files were
lost or mixed.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

SHIPPED_DYCK1 = "dyck1-mamba"

TRAIN = ["--language", "dyck", "--K", "2", "--h", "3", "--layers", "1", "--d-model", "8", "--d-state", "4",
         "--n-train", "32", "--n-dev", "8", "--n-test", "8", "--batch-size", "16", "--epochs", "1",
         "--min-len", "2", "--max-len", "12", "--warmup-steps", "1", "--threads", "1", "--no-progress",
         "--out", "{tmp}/train_out"]
TRAIN_NO_WINDOW = [a for i, a in enumerate(TRAIN) if "-len" not in a and "-len" not in TRAIN[i - 1]]
EVAL = ["--model", SHIPPED_DYCK1, "--n", "4"]
STUDY = ["--quick", "--no-progress", "--no-figures", "--out", "{tmp}/study_out"]
SUITE = ["--out", "{tmp}/suite_out", "--runs-dir", "{tmp}/suite_runs", "--budget", "quick",
         "--languages", "parity", "--models", "mamba-1l"]
CONS = ["--language", "dyck", "--min-len", "2", "--max-len", "20", "--n", "4"]


WARM_UP = ("hooks.mamba", "hooks.transformer", "trained_models.train", "trained_models.evaluate",
           "trained_models.suite", "trained_models.recipes", "analyses.dyck_probe", "analyses.parity_probe",
           "analyses.counter_probe", "analyses.flipflop_probe", "analyses.dyck_steering",
           "hooks.constructions.__main__", "languages.__main__")


@dataclass(frozen=True)
class Case:
    module: str  # the CLI: python -m MODULE
    argv: tuple  # "{tmp}" and "{damaged:KIND}" are filled in by prepare()
    names: str  # what the one-line message must contain (the argument, or the file for damaged ones)

    @property
    def label(self) -> str:
        return f"{self.module} {' '.join(self.argv)}"


def _c(module: str, base: list, extra: list, names: str) -> Case:
    return Case(module, tuple(base + extra), names)


T, E, S = "trained_models.train", "trained_models.evaluate", "trained_models.suite"
CASES: list[Case] = [
    # trained_models.train
    *[_c(T, TRAIN, [flag, value], flag) for flag, value in [
        ("--n-train", "0"), ("--n-dev", "0"), ("--n-test", "-1"), ("--batch-size", "0"), ("--evals-per-epoch", "0"),
        ("--epochs", "0"), ("--layers", "0"), ("--d-model", "-8"), ("--lr", "0"), ("--lr", "nan"),
        ("--max-minutes", "-1"), ("--max-cpu-minutes", "0"), ("--max-steps", "0"), ("--patience", "0"), ("--warmup-steps", "-1"),
        ("--threads", "0"), ("--K", "0"), ("--h", "0"), ("--p", "1.5"), ("--target", "2"), ("--seed", "-3"),
        ("--weight-decay", "-0.1"), ("--n-heads", "0"), ("--language", "nope"), ("--test-window", "bin1"),
        ("--test-window", "bin1=9:3"), ("--init-from", "{tmp}/nowhere")]],
    _c(T, TRAIN, ["--min-len", "10", "--max-len", "5"], "--min-len"),
    _c(T, TRAIN_NO_WINDOW, ["--min-len", "5"], "--min-len"),
    _c(T, TRAIN[:-2], ["--out", ""], "--out"),
    _c(T, TRAIN, ["--finish"], "--finish"),
    _c(T, TRAIN, ["--targets", "paper"], "--targets"),  # dyck has no other targets
    _c(T, TRAIN, ["--targets", "mine"], "--targets"),
    _c(T, TRAIN, ["--paper-data", "{tmp}/no-repo"], "stores no data for 'dyck'"),
    _c(T, ["--language", "d2", "--n-train", "8", "--out", "{tmp}/train_out"], ["--paper-data", "{tmp}/no-repo"],
       "no-repo"),
    _c(T, TRAIN, ["--dt-init", "0.1", "0"], "--dt-init"),
    _c(T, TRAIN[:-2], ["--out", "{run}"], "--out"),  # a folder holding a run, without --resume/--force
    _c(T, TRAIN[:-2], ["--resume", "--force", "--out", "{run}"], "--resume"),
    # trained_models.evaluate
    *[_c(E, EVAL, [flag, value], flag) for flag, value in [
        ("--n", "0"), ("--n", "-5"), ("--batch-size", "0"), ("--seed", "-1"), ("--K", "3"), ("--p", "0.5"),
        ("--language", "parity"), ("--min-len", "-2")]],
    _c(E, EVAL, ["--language", "dyck", "--K", "3", "--h", "4"], "--language"),
    _c(E, EVAL, ["--min-len", "10", "--max-len", "5"], "--min-len"),
    _c(E, EVAL, ["--min-len", "5"], "--min-len"),
    _c(E, ["--model", "nope"], [], "--model"),
    _c(E, EVAL, ["--paper-data", "{tmp}/no-repo"], "no-repo"),
    _c(E, ["--model", SHIPPED_DYCK1, "--own-split", "bin7"], [], "--own-split bin7"),
    _c(E, ["--model", SHIPPED_DYCK1, "--held-out-bin0", "--own-split", "bin0"], [], "--held-out-bin0"),
    _c(E, ["--model", SHIPPED_DYCK1, "--own-split", "bin0", "--min-len", "2", "--max-len", "4"], [], "--own-split"),
    _c(E, ["--model", SHIPPED_DYCK1, "--n", "1000000000"], [], "--n"),
    *[_c(E, ["--model", "{damaged:%s}" % kind, "--n", "4"], [], what) for kind, what in [
        ("flipped_bytes", "model.safetensors"), ("nan_weights", "model.safetensors"),
        ("int64_D", "model.safetensors"), ("truncated", "model.safetensors"),
        ("no_language", "card.json"), ("bad_json", "card.json"), ("nan_weights_rehashed", "embed.weight")]],
    _c(E, ["--model", "{damaged:int64_D}", "--n", "4", "--no-verify"], [], "blocks.0.mixer.D"),
    _c(E, ["--model", "{damaged:truncated}", "--n", "4", "--no-verify"], [], "model.safetensors"),
    # trained_models.suite (argument validation only)
    *[_c(S, SUITE, [flag, value], flag) for flag, value in [
        ("--max-total-minutes", "-1"), ("--jobs", "0"), ("--budget", "nope"), ("--out", "")]],
    _c(S, SUITE, ["--languages", "nope"], "nope"),
    _c(S, SUITE, ["--paper-data", "{tmp}/not-a-clone"], "--paper-data"),
    _c(S, SUITE, ["--paper-data", "."], "--paper-data"),  # a git repository, but not the paper's
    # trained_models.recipes
    _c("trained_models.recipes", ["--root", "{tmp}/recipes"], ["nope"], "nope"),
    *[_c("trained_models.recipes", ["--root", "{tmp}/recipes", "dyck1-mamba"], [flag, value], flag)
      for flag, value in [("--max-minutes", "-1"), ("--threads", "0"), ("--epochs", "0"), ("--seed", "-1")]],
    # the studies
    *[_c(f"analyses.{study}", STUDY, [flag, value], flag) for study in
      ("dyck_probe", "parity_probe", "counter_probe", "flipflop_probe")
      for flag, value in [("--n", "0"), ("--n", "-4"), ("--model", "nope"), ("--seed", "-1"), ("--jobs", "0"),
                          ("--jobs", "two")]],
    # analyses.tomita3_targets
    _c("analyses.tomita3_targets", [], ["--runs", "{tmp}/no-runs-here", "--out", "{tmp}/t3.md"], "no trained runs"),
    # analyses.dn_depth
    _c("analyses.dn_depth", [], ["--runs", "{tmp}/no-runs-here", "--out", "{tmp}/dn.md"], "no trained runs"),
    # analyses.block_counter_errors
    _c("analyses.block_counter_errors", [], ["--runs", "{tmp}/no-runs-here", "--out", "{tmp}/bce.md"],
       "no trained runs"),
    # analyses.seed_spread
    _c("analyses.seed_spread", [], ["{tmp}/no-such-report.json", "{tmp}/other.json"], "no-such-report.json"),
    _c("analyses.seed_spread", [], ["{tmp}/no-such-report.json"], "at least two"),
    # benchmarks.das_rotation
    _c("benchmarks.das_rotation", [], ["--reps", "0"], "--reps"),
    _c("benchmarks.das_rotation", [], ["--reps", "x"], "--reps"),
    _c("analyses.dyck_probe", STUDY, ["--K", "0"], "--K"),
    _c("analyses.dyck_probe", STUDY, ["--h", "-1"], "--h"),
    _c("analyses.dyck_probe", STUDY, ["--lengths", "5:2", "9:20"], "--lengths"),
    _c("analyses.dyck_probe", STUDY, ["--model", "parity-mamba-signed"], "parity-mamba-signed"),
    _c("analyses.dyck_probe", STUDY[:-2], ["--out", ""], "--out"),
    _c("analyses.dyck_probe", STUDY, ["--das-table", "{tmp}"], "--das-table"),
    _c("analyses.dyck_probe", STUDY, ["--das-ranks", "0"], "--das-ranks"),
    _c("analyses.dyck_probe", STUDY, ["--das-parts", "nope"], "--das-parts"),
    _c("analyses.parity_probe", STUDY, ["--T", "0"], "--T"),
    _c("analyses.parity_probe", STUDY, ["--T", "-5"], "--T"),
    _c("analyses.parity_probe", STUDY[:-1], ["{tmp}/a_file"], "--out"),
    _c("analyses.counter_probe", STUDY, ["--language", "parity"], "--language"),
    _c("analyses.flipflop_probe", STUDY, ["--length", "3"], "--length"),
    _c("analyses.flipflop_probe", STUDY, ["--length", "-2"], "--length"),
    _c("analyses.dyck_steering", [], ["--n", "0"], "--n"),
    _c("analyses.dyck_steering", [], ["--model", "nope"], "--model"),
    # hooks.constructions
    *[_c("hooks.constructions", CONS, [flag, value], flag) for flag, value in [
        ("--n", "0"), ("--K", "0"), ("--h", "-1"), ("--p", "2"), ("--batch-size", "0"), ("--K", "8.5"),
        ("--seed", "-1")]],
    _c("hooks.constructions", ["--language", "dyck", "--n", "4"], ["--min-len", "10", "--max-len", "5"], "--min-len"),
    _c("hooks.constructions", ["--language", "dyck", "--min-len", "701", "--max-len", "1400"], ["--n", "1000000000"],
       "--n"),
    # languages
    _c("languages", [], ["nope"], "nope"),
    _c("languages", ["dyck"], ["--K", "0"], "--K"),
    _c("languages", ["dyck"], ["--K", "-1"], "--K"),
    _c("languages", ["dyck"], ["--h", "2.5"], "--h"),
    _c("languages", ["flipflop"], ["--p", "2"], "--p"),
    _c("languages", ["dyck"], ["--rows", "0"], "--rows"),
    _c("languages", [], ["--K", "3"], "--K"),
]


def _api_cases() -> list[tuple[str, Callable[[], object]]]:
    import languages
    from languages import DFA

    dyck = languages.get("dyck", K=2, h=3)
    return [
        ('languages.get("dyck", K=8.5)', lambda: languages.get("dyck", K=8.5)),
        ('languages.get("dyck", K=True)', lambda: languages.get("dyck", K=True)),
        ('languages.get("dyck", h=0)', lambda: languages.get("dyck", h=0)),
        ('languages.get("flipflop", p=1.5)', lambda: languages.get("flipflop", p=1.5)),
        ('languages.get("flipflop", p=float("nan"))', lambda: languages.get("flipflop", p=float("nan"))),
        ("sample(2.5, 2, 10)", lambda: dyck.sample(2.5, 2, 10)),
        ("sample(True, 2, 10)", lambda: dyck.sample(True, 2, 10)),
        ("sample(4, 2.5, 10)", lambda: dyck.sample(4, 2.5, 10)),
        ("sample(-1, 2, 10)", lambda: dyck.sample(-1, 2, 10)),
        ("sample(10**9, 701, 1400)", lambda: languages.get("dyck").sample(10**9, 701, 1400)),
        ("DFA with conflicting transitions", lambda: DFA([0, 1], "a", [((0, "a"), 1), ((0, "a"), 0), ((1, "a"), 1)],
                                                         0, [1])),
        ("DFA with conflicting triples", lambda: DFA([0, 1], "a", [(0, "a", 1), (0, "a", 0)], 0, [1])),
    ]


# --------------------------------------------------------------------------- fixtures


def damage(src: Path, dst: Path, kind: str) -> Path:
    """A copy of the run folder ``src`` at ``dst`` with one kind of damage."""
    shutil.copytree(src, dst)
    w, c = dst / "model.safetensors", dst / "card.json"
    if kind == "flipped_bytes":
        b = bytearray(w.read_bytes())
        b[-100] ^= 0xFF
        w.write_bytes(bytes(b))
    elif kind in ("nan_weights", "int64_D", "nan_weights_rehashed"):
        from safetensors.torch import load_file, save_file
        import torch

        t = load_file(str(w))
        if kind == "int64_D":
            t["blocks.0.mixer.D"] = t["blocks.0.mixer.D"].round().to(torch.int64)
        else:
            t["embed.weight"][0, 0] = float("nan")
        save_file(t, str(w))
        if kind == "nan_weights_rehashed":  # e.g. a diverged run saved with its own (valid) card
            import hashlib

            card = json.loads(c.read_text())
            card["weights"]["sha256"] = hashlib.sha256(w.read_bytes()).hexdigest()
            c.write_text(json.dumps(card))
    elif kind == "truncated":
        w.write_bytes(w.read_bytes()[:200])
    elif kind == "no_language":
        card = json.loads(c.read_text())
        del card["language"]
        c.write_text(json.dumps(card))
    elif kind == "bad_json":
        c.write_text(c.read_text()[:-20])
    return dst


def prepare(tmp: Path) -> dict[str, str]:
    """The placeholders' values: damaged copies of a shipped model, a folder holding a run, a file."""
    from trained_models.registry import SHIPPED

    values = {"tmp": str(tmp)}
    for kind in ("flipped_bytes", "nan_weights", "int64_D", "truncated", "no_language", "bad_json",
                 "nan_weights_rehashed"):
        values[f"damaged:{kind}"] = str(damage(SHIPPED / SHIPPED_DYCK1, tmp / f"damaged_{kind}", kind))
    run = tmp / "a_run"
    shutil.copytree(SHIPPED / SHIPPED_DYCK1, run)  # a folder holding a (finished) run
    values["run"] = str(run)
    (tmp / "a_file").write_text("not a folder")
    return values


def fill(case: Case, values: dict[str, str]) -> list[str]:
    out = []
    for a in case.argv:
        for k, v in values.items():
            a = a.replace("{" + k + "}", v)
        out.append(a)
    return out


# --------------------------------------------------------------------------- running


class _Alarm(BaseException):
    pass


@dataclass
class Outcome:
    case: Case
    kind: str  # clear / traceback / silent / unclear
    rc: Optional[int]
    message: str


def run_case(case: Case, values: dict[str, str], timeout: float = 20.0) -> Outcome:
    """Call ``MODULE.main(argv)`` in-process and classify what happened."""
    mod = importlib.import_module(case.module if case.module != "languages" else "languages.__main__")
    if case.module == "hooks.constructions":
        mod = importlib.import_module("hooks.constructions.__main__")
    argv = fill(case, values)
    out, err = io.StringIO(), io.StringIO()
    rc: Optional[int] = None
    kind = ""
    with _alarm(timeout):
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = mod.main(argv)
            except SystemExit as e:
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                    rc = 1
                else:
                    rc = int(e.code or 0)
            except _Alarm:
                kind = "silent"
            except Exception as e:  # would be a traceback on the command line
                kind, rc = "traceback", 1
                print(f"Traceback: {type(e).__name__}: {e}", file=sys.stderr)
    message = err.getvalue().strip()
    if not kind:
        lines = message.splitlines()
        if rc == 0:
            kind = "silent"
        elif rc == 2 and len(lines) == 1 and case.names in lines[0] and "Traceback" not in message:
            kind = "clear"
        else:
            kind = "unclear"
    return Outcome(case, kind, rc, message)


@contextlib.contextmanager
def _alarm(timeout: float):
    def on_alarm(signum, frame):
        raise _Alarm()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_api(timeout: float = 20.0) -> list[tuple[str, str]]:
    """Each API case: ``raised`` (ValueError/TypeError with a message) or ``accepted`` (returned, or
    still running after ``timeout`` seconds)."""
    out = []
    for label, call in _api_cases():
        try:
            with _alarm(timeout):
                call()
            out.append((label, "accepted"))
        except _Alarm:
            out.append((label, "accepted"))
        except (ValueError, TypeError) as e:
            out.append((label, f"raised: {' '.join(str(e).split())[:90]}"))
    return out


# --------------------------------------------------------------------------- data-loss scenarios


KILL_AFTER_MODEL_WRITE = r"""
import json, os, sys
import trained_models.run_folder as rf
from trained_models.training import train
from trained_models.config import TrainConfig

real, calls = rf.atomic_save_safetensors, []
def save(path, tensors, metadata=None):
    out = real(path, tensors, metadata)
    if os.path.basename(str(path)) == "model.safetensors":
        calls.append(path)
        if len(calls) == int(sys.argv[2]):
            os._exit(9)  # killed right after the checkpoint's model tensors were written
    return out
rf.atomic_save_safetensors = save
train(TrainConfig.from_dict(json.loads(os.environ["CFG"])), sys.argv[1], progress=False)
"""


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _quiet(call: Callable[[], object]) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            call()
        except BaseException:  # old code: a traceback; what matters here is what is left on disk
            pass


def data_loss_scenarios(tmp: Path) -> list[tuple[str, bool]]:
    """Each way of losing a saved result (a killed or repeated command) on this checkout: ``(label, data lost)``."""
    import subprocess

    import torch

    from trained_models import load
    from trained_models.config import TrainConfig
    from trained_models.train import main as train_main
    from trained_models.training import train

    results = []
    anbn = ["--language", "anbn", "--n-train", "20", "--n-dev", "8", "--n-test", "8", "--batch-size", "8",
            "--epochs", "2", "--layers", "1", "--d-model", "8", "--threads", "1", "--no-progress"]
    run = tmp / "anbn_run"
    _quiet(lambda: train_main(anbn + ["--out", str(run)]))
    before = snapshot(run)
    _quiet(lambda: train_main([a.replace("{tmp}/train_out", str(run)) for a in TRAIN]))
    results.append(("train --out over a run of another language", snapshot(run) != before))
    _quiet(lambda: train_main(anbn + ["--evals-per-epoch", "0", "--out", str(run)]))
    results.append(("a failing train command (--evals-per-epoch 0) over a run", snapshot(run) != before))

    killed = tmp / "killed_run"
    argv = [a.replace("{tmp}/train_out", str(killed)) for a in TRAIN]
    _quiet(lambda: train_main(argv + ["--max-minutes", "1e-9"]))  # "killed" after its first step
    before = snapshot(killed)
    _quiet(lambda: train_main(argv))  # the run's command again, without --resume
    results.append(("re-running a killed run's command without --resume", snapshot(killed) != before))

    cfg = TrainConfig(language="dyck", language_params={"K": 2, "h": 3}, layers=1, d_model=8, d_state=4, n_train=64,
                      n_dev=16, n_test=16, batch_size=16, epochs=3, evals_per_epoch=2, train_window=(2, 16),
                      test_windows={"bin0": (2, 16), "bin1": (18, 30)}, warmup_steps=2, lr=3e-3, threads=1,
                      patience=100)
    _quiet(lambda: train(cfg, tmp / "full", progress=False))
    import trained_models

    root = str(Path(trained_models.__file__).resolve().parents[1])  # the checkout under test, in the child too
    env = {**os.environ, "CFG": json.dumps(cfg.to_dict()), "OMP_NUM_THREADS": "1", "PYTHONPATH": root}
    subprocess.run([sys.executable, "-c", KILL_AFTER_MODEL_WRITE, str(tmp / "kill"), "2"], env=env,
                   capture_output=True, timeout=600)
    _quiet(lambda: train(cfg, tmp / "kill", resume=True, progress=False))
    try:
        a, b = load(tmp / "full")[0].state_dict(), load(tmp / "kill")[0].state_dict()
        differ = any(not torch.equal(a[k], b[k]) for k in a)
    except Exception:
        differ = True
    results.append(("killed between the checkpoint's writes, then --resume", differ))

    from analyses import parity_probe as pp
    from analyses import study as skeleton

    def study(seed: int) -> None:
        st = pp.Settings.quick(n=8, probe_train=16, probe_test=8, probe_positions=200, test_positions=100,
                               ood_positions=100, T=200, bins={"bin0": (2, 20), "bin1": (21, 40)}, seed=seed)
        pp.run([], st, tmp / "study", progress=False)

    _quiet(lambda: study(0))
    before = snapshot(tmp / "study")
    real = skeleton.write_report

    def killed_report(*a, **k):
        raise KeyboardInterrupt

    skeleton.write_report = killed_report
    try:
        _quiet(lambda: study(1))
    finally:
        skeleton.write_report = real
    results.append(("a study interrupted after its figures", snapshot(tmp / "study") != before))
    return results


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description="run every bad input and count the outcomes")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--only", choices=("cli", "api", "data"), action="append", help="default: all three")
    args = ap.parse_args()
    parts = set(args.only or ("cli", "api", "data"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    import torch

    torch.set_num_threads(1)
    for m in WARM_UP:  # imports are not the CLI's answer time: load them before the alarms start
        importlib.import_module(m)
    counts: dict[str, int] = {}
    losses: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory() as d:
        values = prepare(Path(d))
        for case in CASES if "cli" in parts else []:
            o = run_case(case, values, args.timeout)
            counts[o.kind] = counts.get(o.kind, 0) + 1
            if args.verbose or o.kind != "clear":
                print(f"[{o.kind:9s}] rc={o.rc} {case.label[:110]}\n            {o.message.splitlines()[-1][:160] if o.message else ''}")
        if "data" in parts:
            losses = data_loss_scenarios(Path(d))
    api = run_api(args.timeout) if "api" in parts else []
    for label, what in api:
        if args.verbose or what == "accepted":
            print(f"[api] {label}: {what}")
    print(f"\n{sum(counts.values())} bad command lines: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for label, lost in losses:
        print(f"[data] {label}: {'LOST' if lost else 'kept'}")
    print(f"{len(losses)} data-loss scenarios: lost {sum(l for _, l in losses)}")
    print(f"{len(api)} bad API calls: rejected {sum(w != 'accepted' for _, w in api)}, "
          f"accepted {sum(w == 'accepted' for _, w in api)}")
    return 0


if __name__ == "__main__":
    if not os.environ.get("PYTHONPATH"):  # this checkout's packages, not the installed ones
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
