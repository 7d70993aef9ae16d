"""analyses.parallel.run_tasks: worker processes give the in-process results, in task order."""
from __future__ import annotations

import functools
import os

import pytest

from analyses.parallel import run_tasks


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _fail(x: int) -> int:
    raise ValueError(f"bad {x}")


def test_workers_return_the_in_process_results_in_task_order():
    tasks = [(f"t{i}", functools.partial(_square_and_pid, i)) for i in range(5)]
    serial = run_tasks(tasks, jobs=1, progress=False)
    parallel = run_tasks(tasks, jobs=2, progress=False)
    assert [v for v, _ in parallel] == [v for v, _ in serial] == [0, 1, 4, 9, 16]
    assert {pid for _, pid in serial} == {os.getpid()}
    assert os.getpid() not in {pid for _, pid in parallel}  # computed in forked workers


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_task_raises_with_its_name(jobs):
    tasks = [("fine", functools.partial(_square_and_pid, 1)), ("broken", functools.partial(_fail, 3))]
    with pytest.raises(ValueError, match="bad 3") as info:
        run_tasks(tasks, jobs=jobs, progress=False)
    assert any("'broken'" in note for note in info.value.__notes__)


def test_jobs_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        run_tasks([], jobs=0)
