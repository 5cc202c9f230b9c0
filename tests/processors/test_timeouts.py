"""The timeout kinds a worker does not enforce itself: schedule_to_start and
schedule_to_close, recorded by the watchdog of a running worker node."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest

from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from execution_ledger.domain.timeouts import TimeoutOverrides
from tests.processors.worker_harness import run_nodes_until, runtime_with_config

CONFIG = textwrap.dedent(
    """
    [queues.single]
    concurrency = 1

    [task_types.nap]
    adapter = "python"
    queue = "single"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:sleep" }
    """
)


@pytest.fixture
def rt(ledger_env: None, tmp_path: Path) -> Iterator[Runtime]:
    runtime = runtime_with_config(tmp_path, CONFIG)
    yield runtime
    runtime.close()


def names(rt: Runtime, task_id: UUID) -> list[str]:
    return [type(e.event).__name__ for e in rt.store.history(task_id)]


def kinds(rt: Runtime, task_id: object) -> list[str]:
    return [
        e.event.kind for e in rt.store.history(task_id) if type(e.event).__name__ == "TaskTimedOut"
    ]  # type: ignore[arg-type, attr-defined]


def test_a_task_not_started_in_time_times_out_schedule_to_start_and_is_not_retried(
    rt: Runtime,
) -> None:
    blocker = rt.ledger.enqueue(TaskRequest("nap", {"seconds": 600}))  # holds the one slot
    waiting = rt.ledger.enqueue(
        TaskRequest("nap", {"seconds": 0}, timeouts=TimeoutOverrides(schedule_to_start=0.5))
    )
    blocker_states: list[TaskState] = []

    def waiting_ended() -> bool:
        if not rt.store.load(waiting.id).state.is_terminal:
            return False
        blocker_states.append(rt.store.load(blocker.id).state)
        rt.ledger.cancel(blocker.id, by="test")  # the slot was never free: free it now
        return True

    run_nodes_until(rt, waiting_ended, timeout=60)
    assert kinds(rt, waiting.id) == ["schedule_to_start"]
    task = rt.store.load(waiting.id)
    assert (task.state, task.attempts) == (TaskState.FAILED, 0)
    assert "TaskStarted" not in names(rt, waiting.id)
    assert blocker_states == [TaskState.RUNNING]


def test_a_task_past_its_overall_deadline_times_out_schedule_to_close_even_while_running(
    rt: Runtime,
) -> None:
    task = rt.ledger.enqueue(
        TaskRequest("nap", {"seconds": 600}, timeouts=TimeoutOverrides(schedule_to_close=1.0))
    )
    run_nodes_until(rt, lambda: rt.store.load(task.id).state.is_terminal, timeout=60)
    assert kinds(rt, task.id) == ["schedule_to_close"]
    assert names(rt, task.id) == ["TaskEnqueued", "TaskStarted", "TaskTimedOut"]
    assert rt.store.load(task.id).state is TaskState.FAILED


def test_a_delayed_task_waits_for_its_run_at_while_the_worker_is_free(rt: Runtime) -> None:
    run_at = utc_now() + timedelta(seconds=1)
    task = rt.ledger.enqueue(TaskRequest("nap", {"seconds": 0}, run_at=run_at))
    later = rt.ledger.enqueue(TaskRequest("nap", {"seconds": 0}, run_at=run_at + timedelta(days=1)))
    now = rt.ledger.enqueue(TaskRequest("nap", {"seconds": 0}))
    assert task.state is TaskState.SCHEDULED
    run_nodes_until(rt, lambda: rt.store.load(task.id).state.is_terminal, timeout=60)
    started = next(e for e in rt.store.history(task.id) if type(e.event).__name__ == "TaskStarted")
    assert started.event.timestamp >= run_at
    assert rt.store.history(now.id)[-1].position < started.position  # the slot was free
    assert rt.store.load(later.id).state is TaskState.SCHEDULED
