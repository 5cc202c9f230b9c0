"""Debounce: a burst of submissions with one key becomes one pending task, which starts the
window after the last of them with the last one's args (mode ``last``) or the first's
(``first``); each later submission is a ``TaskDebounced`` event moving its start on (in the
dispatch queue and the task view too). Once it has started, the next submission makes a new
task. Bad options are refused with nothing stored."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from execution_ledger.adapters.dataset.replay import Replay
from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.postgres.dispatch import PostgresDispatch
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.coalescing import Debounce
from execution_ledger.domain.errors import InvalidSubmission
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import Task


def debounced(
    args: dict[str, Any], key: str = "sync", window: float = 60.0, **more: Any
) -> TaskRequest:
    return TaskRequest("echo", args, debounce=Debounce(key, window, **more))


def dispatch_row(runtime: Runtime, task: Task) -> dict[str, Any] | None:
    with runtime.store.transaction() as cursor:
        return cursor.execute(
            f'SELECT state, run_at FROM "{runtime.store.schema}".dispatch_queue WHERE task_id = %s',
            (task.id,),
        ).fetchone()


def event_names(runtime: Runtime, task: Task) -> list[str]:
    return [type(r.event).__name__ for r in runtime.ledger.history(task.id)]


def test_a_burst_becomes_one_task_with_the_last_args_and_a_start_moved_on(
    runtime: Runtime,
) -> None:
    first, created = runtime.ledger.enqueue_once(debounced({"n": 1}))
    first_start = first.run_at
    assert created and first.state.value == "scheduled" and first.debounce_key == "sync"
    assert first_start is not None and first_start > utc_now() + timedelta(seconds=50)
    answers = [runtime.ledger.enqueue_once(debounced({"n": n})) for n in (2, 3)]
    assert [(task.id, new) for task, new in answers] == [(first.id, False)] * 2
    task = runtime.store.load(first.id)
    assert task.args == {"n": 3} and task.state.value == "scheduled"
    assert task.run_at is not None and task.run_at > first_start
    assert event_names(runtime, task) == ["TaskEnqueued", "TaskDebounced", "TaskDebounced"]
    last = runtime.ledger.history(task.id)[-1].event
    assert last.args == {"n": 3} and last.by == "system" and last.replaces_args  # type: ignore[attr-defined]
    row = dispatch_row(runtime, task)
    assert row is not None and row["state"] == "scheduled" and row["run_at"] == task.run_at
    runtime.catch_up()
    with runtime.store.transaction() as cursor:
        view = cursor.execute(
            f'SELECT args, run_at, state FROM "{runtime.store.schema}".task_view',
        ).fetchall()
    assert view == [{"args": {"n": 3}, "run_at": task.run_at, "state": "scheduled"}]
    with runtime.store.transaction() as cursor:
        node = cursor.execute(
            f'SELECT state, run_at, due_at FROM "{runtime.store.schema}".readiness_nodes',
        ).fetchall()
    assert node == [{"state": "scheduled", "run_at": task.run_at, "due_at": task.run_at}]


def test_mode_first_keeps_the_first_args_and_still_moves_the_start(runtime: Runtime) -> None:
    first, _ = runtime.ledger.enqueue_once(debounced({"n": 1}, mode="first"))
    again, created = runtime.ledger.enqueue_once(debounced({"n": 2}, mode="first"))
    task = runtime.store.load(first.id)
    assert not created and again.id == first.id
    assert task.args == {"n": 1} and task.run_at is not None and first.run_at is not None
    assert task.run_at > first.run_at
    assert not runtime.ledger.history(task.id)[-1].event.replaces_args  # type: ignore[attr-defined]


def test_a_submission_after_the_start_makes_a_new_task(runtime: Runtime) -> None:
    first, _ = runtime.ledger.enqueue_once(debounced({"n": 1}))
    task = runtime.store.load(first.id)
    assert task.run_at is not None
    task.start("w1", task.run_at + timedelta(seconds=30), now=task.run_at)  # its window passed
    runtime.store.save(task)
    second, created = runtime.ledger.enqueue_once(debounced({"n": 2}))
    assert created and second.id != first.id and second.args == {"n": 2}
    third, created_third = runtime.ledger.enqueue_once(debounced({"n": 3}))
    assert not created_third and third.id == second.id
    assert runtime.store.load(first.id).args == {"n": 1}  # the started one is left alone


def test_a_debounced_task_runs_once_when_a_worker_claims_it_after_the_window(
    runtime: Runtime,
) -> None:
    first, _ = runtime.ledger.enqueue_once(debounced({"n": 1}, window=0.2))
    runtime.ledger.enqueue_once(debounced({"n": 2}, window=0.2))
    dispatch = PostgresDispatch(runtime.store, runtime.settings.config.registry, clock=utc_now)
    assert dispatch.claim(["default"], 5, "w1") == []  # within the window: not due
    deadline = time.monotonic() + 10
    claimed = []
    while not claimed and time.monotonic() < deadline:
        claimed = dispatch.claim(["default"], 5, "w1")
        time.sleep(0.02)
    assert [c.task_id for c in claimed] == [first.id]
    assert claimed[0].args == {"n": 2}
    after, created = runtime.ledger.enqueue_once(debounced({"n": 3}, window=0.2))
    assert created and after.id != first.id


def test_a_cancelled_pending_task_gives_its_key_to_the_next_submission(runtime: Runtime) -> None:
    first, _ = runtime.ledger.enqueue_once(debounced({"n": 1}))
    runtime.ledger.cancel(first.id)
    second, created = runtime.ledger.enqueue_once(debounced({"n": 2}))
    assert created and second.id != first.id


def test_concurrent_submissions_of_one_key_make_one_task(runtime: Runtime) -> None:
    barrier = threading.Barrier(5)
    results: list[tuple[Task, bool]] = []

    def submit(n: int) -> None:
        barrier.wait()
        results.append(runtime.ledger.enqueue_once(debounced({"n": n})))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 5 and len({task.id for task, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 4 + [True]
    task = results[0][0]
    assert event_names(runtime, task).count("TaskDebounced") == 4


def test_a_template_key_debounces_per_argument_value(runtime: Runtime) -> None:
    a, _ = runtime.ledger.enqueue_once(debounced({"account": 1}, key="sync:{account}"))
    b, created_b = runtime.ledger.enqueue_once(debounced({"account": 2}, key="sync:{account}"))
    a2, created_a2 = runtime.ledger.enqueue_once(debounced({"account": 1}, key="sync:{account}"))
    assert created_b and b.id != a.id
    assert not created_a2 and a2.id == a.id
    assert a.debounce_key == "sync:1"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (TaskRequest("echo", debounce=Debounce("", 5)), "debounce.key must be a non-empty"),
        (TaskRequest("echo", debounce=Debounce("k", 0)), "must be positive"),
        (TaskRequest("echo", debounce=Debounce("k", 5, mode="middle")), "'last' or 'first'"),
        (TaskRequest("echo", debounce=Debounce("k:{who}", 5)), "needs the argument 'who'"),
        (
            TaskRequest("echo", idempotency_key="i", debounce=Debounce("k", 5)),
            "debounce and an idempotency key cannot be combined",
        ),
        (
            TaskRequest("echo", run_at=utc_now(), debounce=Debounce("k", 5)),
            "run_at cannot be given with it",
        ),
        (
            TaskRequest("echo", singleton="s", debounce=Debounce("k", 5)),
            "debounce and a singleton key cannot be combined",
        ),
    ],
)
def test_bad_debounce_options_are_refused_and_nothing_is_stored(
    runtime: Runtime, request_: TaskRequest, message: str
) -> None:
    head = runtime.store.head_position()
    with pytest.raises(InvalidSubmission, match=message):
        runtime.ledger.enqueue_once(request_)
    assert runtime.store.head_position() == head


def test_a_debounce_in_a_graph_is_refused(runtime: Runtime) -> None:
    head = runtime.store.head_position()
    with pytest.raises(InvalidSubmission, match="debounce coalesces one task at a time"):
        runtime.ledger.enqueue_graph(
            [TaskRequest("echo", ref="a"), TaskRequest("echo", ref="b", debounce=Debounce("k", 5))]
        )
    assert runtime.store.head_position() == head


def test_the_dataset_counts_the_wait_from_the_moved_start_live_and_in_a_replay(
    runtime: Runtime,
) -> None:
    """The learning dataset's ``ready_at`` is the last debounce's start (not the first
    window's end), in the live table and in both replay decodings (server and library)."""
    first, _ = runtime.ledger.enqueue_once(debounced({"n": 1}, window=0.2))
    runtime.ledger.enqueue_once(debounced({"n": 2}, window=0.2))
    task = runtime.store.load(first.id)
    assert task.run_at is not None and first.run_at is not None and task.run_at > first.run_at
    started = task.run_at + timedelta(seconds=1)
    attempt = task.start("w1", started + timedelta(seconds=30), now=started)
    task.succeed(attempt, {"ok": True})
    runtime.store.save(task)
    runtime.catch_up()
    with runtime.store.transaction() as cursor:
        live = cursor.execute(
            f'SELECT ready_at FROM "{runtime.store.schema}".attempt_dataset'
        ).fetchall()
    assert live == [{"ready_at": task.run_at}]
    for fast in (True, False):
        rows = [row for page in Replay(runtime.store, fast=fast).pages() for row in page]
        assert [row.ready_at for row in rows] == [task.run_at], fast


def test_max_wait_stops_a_steady_stream_from_pushing_the_start_away(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = runtime.ledger.enqueue_once(debounced({"n": 1}, window=60.0, max_wait=90.0))
    bound = first.created_on + timedelta(seconds=90)
    runtime.ledger.enqueue_once(debounced({"n": 2}, window=60.0, max_wait=90.0))
    moved = runtime.store.load(first.id)
    assert moved.run_at is not None and first.run_at is not None
    assert first.run_at < moved.run_at < bound  # within the bound: moved as without one
    later = utc_now() + timedelta(seconds=50)  # 50 s on, the window would end past the bound
    monkeypatch.setattr(runtime.ledger, "clock", lambda: later)
    runtime.ledger.enqueue_once(debounced({"n": 3}, window=60.0, max_wait=90.0))
    capped = runtime.store.load(first.id)
    assert capped.run_at == bound and capped.args == {"n": 3}


def test_a_start_between_the_look_and_the_save_makes_the_submission_a_new_task(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker starts the pending task after a submission read it and before its
    ``TaskDebounced`` is saved: that save fails on the task's version, the submission looks
    again and makes a new task; the started one is left as it was."""
    first, _ = runtime.ledger.enqueue_once(debounced({"n": 1}))
    load = runtime.store.load
    raced: list[bool] = []

    def load_then_start(task_id: Any) -> Task:
        seen = load(task_id)  # what the submission decides on: still scheduled
        if task_id == first.id and not raced:
            worker_copy = load(task_id)
            assert worker_copy.run_at is not None
            lease = worker_copy.run_at + timedelta(seconds=30)
            worker_copy.start("w1", lease, now=worker_copy.run_at)
            runtime.store.save(worker_copy)
            raced.append(True)
        return seen

    monkeypatch.setattr(runtime.store, "load", load_then_start)
    second, created = runtime.ledger.enqueue_once(debounced({"n": 2}))
    assert raced and created and second.id != first.id
    assert event_names(runtime, first) == ["TaskEnqueued", "TaskStarted"]
    assert load(first.id).args == {"n": 1}


def burst(runtimes: list[Runtime], per_runtime: int) -> list[tuple[Task, bool] | BaseException]:
    """``per_runtime`` threads per runtime submit one debounce key at the same moment."""
    threads_total = len(runtimes) * per_runtime
    barrier = threading.Barrier(threads_total)
    results: list[tuple[Task, bool] | BaseException] = []

    def submit(rt: Runtime, n: int) -> None:
        barrier.wait()
        try:
            results.append(rt.ledger.enqueue_once(debounced({"n": n}, key="burst")))
        except BaseException as error:  # an answer the test must see, not a lost thread
            results.append(error)

    threads = [
        threading.Thread(target=submit, args=(rt, n)) for n, rt in enumerate(runtimes * per_runtime)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_a_burst_from_many_threads_is_one_task_and_every_submission_is_answered(
    runtime: Runtime,
) -> None:
    """Sixteen threads at once (more than the ledger's five looks per enqueue): they take
    turns per key in the process, so none fails on the task's version."""
    results = burst([runtime], 16)
    assert all(isinstance(r, tuple) for r in results), results
    tasks = {task.id for task, _ in results}  # type: ignore[union-attr]
    assert len(results) == 16 and len(tasks) == 1
    assert event_names(runtime, runtime.store.load(tasks.pop())).count("TaskDebounced") == 15


def test_a_burst_from_two_nodes_is_one_task(runtime: Runtime) -> None:
    other = open_runtime(pool_size=2)
    try:
        results = burst([runtime, other], 6)
    finally:
        other.close()
    assert all(isinstance(r, tuple) for r in results), results
    assert len({task.id for task, _ in results}) == 1  # type: ignore[union-attr]
    assert sorted(created for _, created in results) == [False] * 11 + [True]  # type: ignore[misc]
