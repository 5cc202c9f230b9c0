"""The worker on a real PostgreSQL: tasks run through their adapters, in dependency order,
with retries, timeouts, cancellation, queue and lane limits."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from uuid import UUID

import psutil
import pytest

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from tests.processors.worker_harness import run_nodes_until, runtime_with_config

CONFIG = textwrap.dedent(
    """
    [defaults.timeouts]
    start_to_close = "20s"
    heartbeat = "2s"

    [queues.default]
    concurrency = 10

    [queues.narrow]
    concurrency = 2

    [lanes."agent:*"]
    limit = 1

    [task_types.add]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:add" }

    [task_types.nap]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:sleep" }

    [task_types.narrow_nap]
    adapter = "python"
    queue = "narrow"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:sleep" }

    [task_types.agent_step]
    adapter = "python"
    lane = "agent:{agent_id}"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:sleep" }

    [task_types.flaky]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:fail" }
    retry = { max_attempts = 3, backoff_initial = "50ms", backoff_max = "100ms" }

    [task_types.fatal]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:fail" }
    retry = { max_attempts = 3, non_retryable = ["RuntimeError"] }

    [task_types.slow_shell]
    adapter = "shell"
    settings = { argv = ["/bin/sleep", "{args[seconds]}"] }
    timeouts = { start_to_close = "1s" }
    retry = { max_attempts = 1 }

    [task_types.square]
    adapter = "lua"
    settings = { script = "return args.n * args.n" }

    [task_types.greet]
    adapter = "shell"
    settings = { argv = ["/bin/echo", "{args[name]}"] }

    [task_types.shell_nap]
    adapter = "shell"
    settings = { argv = ["/bin/sleep", "{args[seconds]}"] }
    """
)


@pytest.fixture
def rt(ledger_env: None, tmp_path: Path) -> Iterator[Runtime]:
    runtime = runtime_with_config(tmp_path, CONFIG)
    yield runtime
    runtime.close()


def states(rt: Runtime, ids: list[UUID]) -> list[TaskState]:
    return [rt.store.load(i).state for i in ids]


def all_terminal(rt: Runtime, ids: list[UUID]) -> bool:
    return all(s.is_terminal for s in states(rt, ids))


def events(rt: Runtime, task_id: UUID) -> list[str]:
    return [type(e.event).__name__ for e in rt.store.history(task_id)]


def sleeping(seconds: str) -> list[psutil.Process]:
    """This process's live children running ``/bin/sleep SECONDS`` (a shell task's work)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and child.cmdline() == [
                "/bin/sleep",
                seconds,
            ]:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_task_runs_through_its_adapter_and_records_its_result(rt: Runtime) -> None:
    task = rt.ledger.enqueue(TaskRequest("add", {"a": 2, "b": 3}))
    run_nodes_until(rt, lambda: all_terminal(rt, [task.id]))
    done = rt.store.load(task.id)
    assert (done.state, done.result, done.attempts) == (TaskState.SUCCEEDED, {"sum": 5}, 1)
    assert events(rt, task.id) == ["TaskEnqueued", "TaskStarted", "TaskSucceeded"]


def test_a_dag_over_three_adapters_runs_in_dependency_order(rt: Runtime) -> None:
    tasks = rt.ledger.enqueue_graph(
        [
            TaskRequest("square", {"n": 7}, ref="lua"),
            TaskRequest("greet", {"name": "ada; rm -rf /"}, ref="shell", depends_on=("lua",)),
            TaskRequest("add", {"a": 1, "b": 1}, ref="python", depends_on=("lua", "shell")),
        ]
    )
    ids = [t.id for t in tasks]
    run_nodes_until(rt, lambda: all_terminal(rt, ids))
    lua, shell, python = (rt.store.load(i) for i in ids)
    assert lua.result == 49
    assert shell.result["stdout"] == "ada; rm -rf /\n"
    assert python.result == {"sum": 2}
    finished = [rt.store.history(i)[-1].position for i in ids]
    started = [
        next(e.position for e in rt.store.history(i) if type(e.event).__name__ == "TaskStarted")
        for i in ids
    ]
    assert finished[0] < started[1] and finished[1] < started[2]


def test_a_failing_task_is_retried_with_back_off_then_fails(rt: Runtime) -> None:
    task = rt.ledger.enqueue(TaskRequest("flaky", {"message": "boom"}))
    run_nodes_until(rt, lambda: all_terminal(rt, [task.id]))
    done = rt.store.load(task.id)
    assert (done.state, done.attempts) == (TaskState.FAILED, 3)
    assert done.error["class"] == "RuntimeError"
    assert events(rt, task.id).count("TaskRetryScheduled") == 2


def test_a_non_retryable_error_class_fails_at_once(rt: Runtime) -> None:
    task = rt.ledger.enqueue(TaskRequest("fatal"))
    run_nodes_until(rt, lambda: all_terminal(rt, [task.id]))
    assert rt.store.load(task.id).attempts == 1
    assert "TaskRetryScheduled" not in events(rt, task.id)


def test_start_to_close_kills_the_adapters_process_and_records_a_timeout(rt: Runtime) -> None:
    task = rt.ledger.enqueue(TaskRequest("slow_shell", {"seconds": "601"}))
    run_nodes_until(rt, lambda: all_terminal(rt, [task.id]), timeout=60)
    history = rt.store.history(task.id)
    timed_out = [e.event for e in history if type(e.event).__name__ == "TaskTimedOut"]
    assert [e.kind for e in timed_out] == ["start_to_close"]
    assert rt.store.load(task.id).state is TaskState.FAILED
    assert sleeping("601") == []  # killed before the timeout was recorded


def test_cancelling_a_running_task_stops_its_work(rt: Runtime) -> None:
    task = rt.ledger.enqueue(TaskRequest("shell_nap", {"seconds": "602"}))
    seen_working: list[bool] = []

    def cancelled_and_stopped() -> bool:
        """Cancel once its process runs; done when the process is gone, node still up."""
        if not seen_working and sleeping("602"):
            seen_working.append(True)
            rt.ledger.cancel(task.id, by="tester", reason="enough")
        return bool(seen_working) and not sleeping("602")

    run_nodes_until(rt, cancelled_and_stopped, timeout=60)
    assert rt.store.load(task.id).state is TaskState.CANCELLED
    assert events(rt, task.id) == ["TaskEnqueued", "TaskStarted", "TaskCancelled"]


def _intervals(rt: Runtime, ids: list[UUID]) -> list[tuple[datetime, datetime]]:
    spans = []
    for task_id in ids:
        history = [e.event for e in rt.store.history(task_id)]
        start = next(e.timestamp for e in history if type(e).__name__ == "TaskStarted")
        spans.append((start, history[-1].timestamp))
    return spans


def _most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    points = sorted(
        [(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda p: (p[0], p[1])
    )
    running = peak = 0
    for _, step in points:
        running += step
        peak = max(peak, running)
    return peak


def test_a_queue_limit_holds_across_two_worker_nodes(rt: Runtime) -> None:
    ids = [rt.ledger.enqueue(TaskRequest("narrow_nap", {"seconds": 0.3})).id for _ in range(6)]
    run_nodes_until(rt, lambda: all_terminal(rt, ids), nodes=2, concurrency=5)
    assert states(rt, ids) == [TaskState.SUCCEEDED] * 6
    assert _most_at_once(_intervals(rt, ids)) == 2


def test_a_lane_runs_one_task_at_a_time_in_enqueue_order(rt: Runtime) -> None:
    ids = [
        rt.ledger.enqueue(TaskRequest("agent_step", {"agent_id": 7, "seconds": 0.1})).id
        for _ in range(4)
    ]
    other = rt.ledger.enqueue(TaskRequest("agent_step", {"agent_id": 8, "seconds": 0.1})).id
    run_nodes_until(rt, lambda: all_terminal(rt, [*ids, other]), concurrency=10)
    spans = _intervals(rt, ids)
    assert _most_at_once(spans) == 1
    assert [s for s, _ in spans] == sorted(s for s, _ in spans)
    assert _most_at_once([*spans, *_intervals(rt, [other])]) == 2


def test_a_paused_queue_is_not_claimed_from_until_it_is_resumed(rt: Runtime) -> None:
    rt.ledger.pause_queue("narrow", by="ops")
    held = rt.ledger.enqueue(TaskRequest("narrow_nap", {"seconds": 0}))
    free = rt.ledger.enqueue(TaskRequest("add", {"a": 1, "b": 1}))
    run_nodes_until(rt, lambda: rt.store.load(free.id).state.is_terminal)
    assert rt.store.load(held.id).state is TaskState.READY
    rt.ledger.resume_queue("narrow", by="ops")
    run_nodes_until(rt, lambda: rt.store.load(held.id).state.is_terminal)
    assert rt.store.load(held.id).state is TaskState.SUCCEEDED


def test_pausing_an_unknown_or_already_paused_queue_is_refused(rt: Runtime) -> None:
    from execution_ledger.domain.errors import InvalidTransition, UnknownQueue

    with pytest.raises(UnknownQueue, match="unknown queue 'nope'"):
        rt.ledger.pause_queue("nope")
    rt.ledger.pause_queue("narrow")
    with pytest.raises(InvalidTransition, match="already paused"):
        rt.ledger.pause_queue("narrow")
    rt.ledger.resume_queue("narrow")
    with pytest.raises(InvalidTransition, match="is not paused"):
        rt.ledger.resume_queue("narrow")


def test_a_manually_retried_failed_task_runs_again(rt: Runtime) -> None:
    task = rt.ledger.enqueue(TaskRequest("fatal"))
    run_nodes_until(rt, lambda: all_terminal(rt, [task.id]))
    rt.ledger.retry(task.id, by="ops")
    run_nodes_until(
        rt, lambda: rt.store.load(task.id).attempts == 2 and all_terminal(rt, [task.id])
    )
    assert events(rt, task.id)[-3:] == ["TaskRetryScheduled", "TaskStarted", "TaskFailed"]


def test_higher_priority_tasks_start_first(rt: Runtime) -> None:
    rt.ledger.pause_queue("narrow")
    low = [
        rt.ledger.enqueue(TaskRequest("narrow_nap", {"seconds": 0}, priority=0)).id
        for _ in range(3)
    ]
    high = rt.ledger.enqueue(TaskRequest("narrow_nap", {"seconds": 0}, priority=5)).id
    rt.ledger.resume_queue("narrow")
    run_nodes_until(rt, lambda: all_terminal(rt, [*low, high]), concurrency=1)
    starts = {
        task_id: next(
            e.position for e in rt.store.history(task_id) if type(e.event).__name__ == "TaskStarted"
        )
        for task_id in [*low, high]
    }
    assert min(starts, key=starts.__getitem__) == high
    assert sorted(low, key=starts.__getitem__) == low  # equal priority: enqueue order


def test_a_queue_paused_in_the_config_starts_paused_until_resumed(
    ledger_env: None, tmp_path: Path
) -> None:
    runtime = runtime_with_config(
        tmp_path, CONFIG.replace("[queues.narrow]\n", "[queues.narrow]\npaused = true\n")
    )
    try:
        assert runtime.store.load_queue("narrow").paused
        held = runtime.ledger.enqueue(TaskRequest("narrow_nap", {"seconds": 0}))
        other = runtime.ledger.enqueue(TaskRequest("add", {"a": 1, "b": 2}))
        run_nodes_until(runtime, lambda: runtime.store.load(other.id).state.is_terminal)
        assert runtime.store.load(held.id).state is TaskState.READY
        runtime.ledger.resume_queue("narrow")
    finally:
        runtime.close()
    reopened = runtime_with_config(
        tmp_path, CONFIG.replace("[queues.narrow]\n", "[queues.narrow]\npaused = true\n")
    )
    try:
        assert not reopened.store.load_queue("narrow").paused  # its stored history decides now
    finally:
        reopened.close()
