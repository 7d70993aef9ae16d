"""Executors for the suite's runs: each takes :class:`~trained_models.suite_plan.Run` records and trains the
pending ones; the run directories are the only state they share, so any executor resumes any other's
work (a finished run is skipped, an interrupted one continues from its checkpoint).

* ``joblib`` (default): ``--jobs`` worker processes on this machine.
* ``ray`` (``pip install -e .[ray]``): every run one Ray task with one CPU (and one GPU where the run
  trains on ``cuda`` and the cluster has GPUs), on a local Ray started for the call (``--jobs`` CPUs)
  or on an existing cluster (``--address``; its nodes need this package installed and the runs
  directory on a shared filesystem, since results and checkpoints are plain files).

Every run trains with one torch thread (the models are tiny: on a CPU a second thread costs more
in synchronisation than it gains; two jobs on two cores beat one job with two threads). A run that
raises is reported with its error and written to ``<run>.failed.json``; the others go on.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any, Optional, Sequence

import languages
from languages.io import atomic_write_json
from trained_models.suite_plan import BINS, Run
from trained_models.training import train

STATUSES = ("trained", "skipped", "deferred", "failed")


def one_thread() -> None:
    """Pin this process to one torch (intra-op) thread (the run's config asks one as well)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def run_one(run: Run, deadline: Optional[float] = None) -> dict[str, Any]:
    """Train and evaluate one run unless its result exists; returns ``{"status": ..., "run": name, ...}``.

    ``status``: ``skipped`` (result present), ``trained``, ``deferred`` (``deadline`` passed before it
    started) or ``failed`` (the error is printed and saved beside the run, no result is written, so
    the next invocation retries).
    """
    status = run.status()
    if status == "done":
        return {"status": "skipped", "run": run.name}
    if deadline is not None and time.time() > deadline:
        return {"status": "deferred", "run": run.name}
    if status == "stale":
        moved = run.archive_stale()
        print(f"[suite] {run.name}: its saved result was made by other arguments or data; moved to {moved}, "
              "retraining", flush=True)
    one_thread()
    try:
        result = _train_run(run)
    except Exception as e:  # one bad run must not stop the suite
        tb = traceback.format_exc()
        print(tb, file=sys.stderr)
        print(f"[suite] FAILED {run.name}: {e!r}", file=sys.stderr, flush=True)
        atomic_write_json(run.failure_path, {"run": run.name, "error": repr(e), "traceback": tb,
                                             "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return {"status": "failed", "run": run.name, "error": repr(e)}
    import torch

    result["torch_threads"] = torch.get_num_threads()  # as the run left it
    atomic_write_json(run.result_path, result)
    if run.failure_path.exists():
        run.failure_path.unlink()
    s = result["strict"]
    print(f"[suite] {run.group} {run.language:9s} {run.variant:15s} seed {run.seed} "
          + " ".join(f"{b} {s[b]:6.2f}" for b in BINS if b in s)
          + f"  ({result['steps']} steps, train {result['train_seconds']:.0f}s, wall {result['wall_seconds']:.0f}s)",
          flush=True)
    return {"status": "trained", "run": run.name, "wall_seconds": result["wall_seconds"]}


def _train_run(run: Run) -> dict[str, Any]:
    cfg = run.config()
    identity = run.identity()  # the data as they are when training starts (a clone may move on meanwhile)
    t0 = time.time()
    run.begin()
    card = train(cfg, run.train_dir, resume=True, command=run.command(), progress=False)
    stop_reason = card["stop_reason"]
    if not card.get("metrics"):  # stopped by the per-run time cap: evaluate the best weights so far
        card = train(cfg, run.train_dir, resume=True, finish=True, command=run.command(), progress=False)
        stop_reason = f"{stop_reason} at step {card['steps']} (best weights evaluated)"
    wall = time.time() - t0
    language = languages.get(run.language)
    n_train = run.train_size()
    metrics = card["metrics"]
    return {
        "language": run.language,
        "class": language.kind,
        "variant": run.variant,
        "budget": run.budget,
        "data": "paper" if run.paper_data else "sampled",
        "seed": run.seed,
        "strict": {b: 100.0 * metrics[b]["strict_accuracy"] for b in BINS if b in metrics},
        "n_test": {b: metrics[b]["n"] for b in BINS if b in metrics},
        "metrics": metrics,
        "n_train": n_train,
        "steps": card["steps"],
        "best_step": card["best_step"],
        "stop_reason": stop_reason,
        "train_seconds": card["train_seconds"],
        "wall_seconds": round(wall, 1),
        "train_command": run.command(),
        "identity": identity,
        "train_config": cfg.to_dict(),
        "machine": card.get("machine"),
    }


def summarise(outcomes: Sequence[dict[str, Any]], t0: float) -> dict[str, Any]:
    """Counts per status, the wall time since ``t0``, the trained runs' wall times and the failures."""
    counts = {k: sum(o["status"] == k for o in outcomes) for k in STATUSES}
    walls = [o["wall_seconds"] for o in outcomes if o["status"] == "trained"]
    return {**counts, "wall_seconds": round(time.time() - t0, 1), "run_wall_seconds": walls,
            "failures": [o for o in outcomes if o["status"] == "failed"]}


def run_joblib(runs: Sequence[Run], *, jobs: int = 1, deadline: Optional[float] = None) -> list[dict[str, Any]]:
    """The outcomes of ``runs`` (pending ones trained by ``jobs`` joblib worker processes)."""
    from joblib import Parallel, delayed

    if jobs == 1:  # in this process: no worker start-up, and a debugger sees the run
        return [run_one(r, deadline) for r in runs]
    return Parallel(n_jobs=jobs)(delayed(run_one)(r, deadline) for r in runs)


def ray_task_options(device: str, cluster: dict[str, float]) -> dict[str, Any]:
    """Ray resources of one run: one CPU; one GPU as well where it trains on ``cuda`` and the cluster
    has one (otherwise it would wait forever for a GPU that does not exist)."""
    gpu = device == "cuda" and cluster.get("GPU", 0) >= 1
    return {"num_cpus": 1, "num_gpus": 1 if gpu else 0, "max_retries": 0}


def run_ray(runs: Sequence[Run], *, address: Optional[str] = None, cpus: int = 1, device: str = "cpu",
            deadline: Optional[float] = None) -> list[dict[str, Any]]:
    """The outcomes of ``runs``, each trained as one Ray task, on the cluster at ``address`` or on a
    local Ray with ``cpus`` CPUs started (and stopped) here."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--backend ray needs Ray: pip install -e '.[ray]'") from None

    started = not ray.is_initialized()
    if started:
        # No runtime_env: setting one up costs seconds a worker; Ray gives a 1-CPU task
        # OMP_NUM_THREADS=1 itself and run_one pins torch to one thread.
        try:
            if address:
                ray.init(address=address)
            else:  # tasks pass small records: a small object store
                ray.init(num_cpus=cpus, num_gpus=0 if device == "cpu" else None, include_dashboard=False,
                         object_store_memory=100 * 2**20)
        except Exception as e:  # no cluster at the address, ports taken, ...
            raise RuntimeError(f"cannot {'reach Ray at ' + repr(address) if address else 'start a local Ray'}: "
                               f"{str(e).splitlines()[0] if str(e) else repr(e)}") from e
    try:
        task = ray.remote(run_one).options(**ray_task_options(device, ray.cluster_resources()))
        refs = {task.remote(r, deadline): r for r in runs}
        outcomes = []
        for ref, run in refs.items():
            try:
                outcomes.append(ray.get(ref))
            except Exception as e:  # the worker died (killed, out of memory): that run fails, not the suite
                print(f"[suite] FAILED {run.name}: {e!r}", file=sys.stderr, flush=True)
                outcomes.append({"status": "failed", "run": run.name, "error": repr(e)})
        return outcomes
    finally:
        if started:
            ray.shutdown()


BACKENDS = ("joblib", "ray")


def run_suite(runs: Sequence[Run], *, jobs: int = 1, max_total_minutes: Optional[float] = None,
              backend: str = "joblib", address: Optional[str] = None, device: str = "cpu") -> dict[str, Any]:
    """Run the pending ones of ``runs`` on ``backend``; returns counts per status, the wall time and the
    failures. ``jobs``: parallel runs on this machine (joblib processes, or the CPUs of a local Ray)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    t0 = time.time()
    deadline = t0 + 60 * max_total_minutes if max_total_minutes is not None else None
    done = {r.name for r in runs if r.status() == "done"}
    pending = [r for r in runs if r.name not in done]
    outcomes = [{"status": "skipped", "run": r.name} for r in runs if r.name in done]
    if pending and backend == "ray":
        outcomes += run_ray(pending, address=address, cpus=jobs, device=device, deadline=deadline)
    elif pending:
        outcomes += run_joblib(pending, jobs=jobs, deadline=deadline)
    return summarise(outcomes, t0)
