"""A study's independent pieces (one model's measurements, a figure) run side by side in worker
processes: :func:`run_tasks`.

Tiny models on a CPU are bound by Python and dispatch overhead, not arithmetic, so a second torch
thread gains little while a second process doubles the work done; and two torch threads beside one
busy process lose badly (their OpenMP threads wait on each other). Measured on this 2-core machine,
``python -m analyses.dyck_probe`` in one process: 73 s with two torch threads and 85 s with one on an
idle machine, but 214 s with two threads and 81 s with one beside one busy process. So each worker
runs one torch thread and one BLAS thread.

Workers are forked (the models, strings and settings the tasks close over are inherited, not
pickled); a task's result comes back pickled. ``jobs=1`` runs the tasks in order in this process:
the reference the parallel path is tested against (same report but for timings).
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from typing import Any, Callable, Sequence

import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

__all__ = ["default_jobs", "run_tasks"]

#: The tasks of the pool being run: set before the workers fork, so each inherits them.
_TASKS: list[Callable[[], Any]] = []


def default_jobs() -> int:
    """Worker processes by default: two where the machine has two cores or more (the measured gain;
    each worker holds its own copy of the models and activations), else one."""
    return 2 if (os.cpu_count() or 1) >= 2 and "fork" in multiprocessing.get_all_start_methods() else 1


def _worker_init() -> None:
    torch.set_num_threads(1)
    threadpool_limits(1)


def _call(i: int) -> Any:
    return _TASKS[i]()


def run_tasks(tasks: Sequence[tuple[str, Callable[[], Any]]], jobs: int = 1, desc: str = "",
              progress: bool = True) -> list[Any]:
    """``[fn() for name, fn in tasks]``, computed by ``jobs`` forked worker processes (one torch and one
    BLAS thread each) or, for ``jobs=1``, in order in this process. Tasks start in the given order (put
    the longest first). A task's exception is raised here with a note naming the task; the other
    tasks are cancelled or left to finish."""
    global _TASKS
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    parallel = jobs > 1 and len(tasks) > 1
    if parallel and _TASKS:  # checked before the finally below could clear the running pool's tasks
        raise RuntimeError("run_tasks is not re-entrant: a pool is already running in this process")
    names = [name for name, _ in tasks]
    bar = tqdm(total=len(tasks), disable=not progress, desc=desc, dynamic_ncols=True)
    try:
        if not parallel:
            out = []
            for name, fn in tasks:
                bar.set_postfix_str(name)
                out.append(_named(name, fn))
                bar.update()
            return out
        _TASKS = [fn for _, fn in tasks]
        results: dict[int, Any] = {}
        ctx = multiprocessing.get_context("fork")
        with cf.ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=ctx,
                                    initializer=_worker_init) as pool:
            futures = {pool.submit(_call, i): i for i in range(len(tasks))}
            try:
                for fut in cf.as_completed(futures):
                    i = futures[fut]
                    results[i] = _named(names[i], fut.result)
                    bar.set_postfix_str(f"{names[i]} done")
                    bar.update()
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return [results[i] for i in range(len(tasks))]
    finally:
        if parallel:
            _TASKS = []
        bar.close()


def _named(name: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as e:
        e.add_note(f"(in the task {name!r})")
        raise
