"""Singleton keys: at most one queued-or-running task of a type per key, across concurrent
enqueues (threads, one group-commit batch); free again once the task ends; kept across a
retry; refused in a graph while held; bad keys refused with nothing stored."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.postgres.dispatch import PostgresDispatch
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.errors import InvalidSubmission, SingletonKeyTaken
from execution_ledger.domain.execution import AttemptOutcome, Failure, Success
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import Task
from tests.adapters.test_write_path import held_first_commit, run_all
from tests.conftest import write_config
from tests.helpers import now, start


def key_rows(runtime: Runtime) -> list[tuple[str, str, Any]]:
    with runtime.store.transaction() as cursor:
        rows = cursor.execute(
            f'SELECT task_type, key, task_id FROM "{runtime.store.schema}".singleton_keys '
            "ORDER BY task_type, key"
        ).fetchall()
    return [(r["task_type"], r["key"], r["task_id"]) for r in rows]


def dispatch_of(runtime: Runtime) -> PostgresDispatch:
    return PostgresDispatch(runtime.store, runtime.settings.config.registry, clock=utc_now)


def test_a_second_enqueue_while_one_is_queued_answers_with_the_holder(runtime: Runtime) -> None:
    first, created = runtime.ledger.enqueue_once(TaskRequest("echo", {"n": 1}, singleton="nightly"))
    head = runtime.store.head_position()
    again, created_again = runtime.ledger.enqueue_once(
        TaskRequest("echo", {"n": 2}, singleton="nightly")
    )
    assert (created, created_again) == (True, False)
    assert again.id == first.id and again.args == {"n": 1}
    assert runtime.store.head_position() == head  # nothing stored
    assert first.singleton_key == "nightly"
    assert key_rows(runtime) == [("echo", "nightly", first.id)]


def test_concurrent_enqueues_of_one_key_make_exactly_one_task(runtime: Runtime) -> None:
    barrier = threading.Barrier(6)
    results: list[tuple[Task, bool]] = []

    def enqueue(n: int) -> None:
        barrier.wait()
        results.append(runtime.ledger.enqueue_once(TaskRequest("echo", {"n": n}, singleton="k")))

    threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 6
    assert len({task.id for task, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 5 + [True]
    runtime.catch_up()
    with runtime.store.transaction() as cursor:
        count = cursor.execute(
            f'SELECT count(*) AS n FROM "{runtime.store.schema}".task_view'
        ).fetchone()
    assert count is not None and count["n"] == 1


def test_enqueues_of_one_key_inside_one_batch_answer_each_with_the_one_task(
    runtime: Runtime, database_url: str
) -> None:
    """Three enqueues of one key queue behind a held commit and share a batch: the batch
    fails on the key, is committed again unit by unit, and each caller gets its own answer
    (one created, two coalesced), while an unrelated enqueue of the batch is stored."""
    with held_first_commit(runtime, database_url) as queued:
        results, threads = run_all(
            [
                lambda n=n: runtime.ledger.enqueue_once(
                    TaskRequest("echo", {"n": n}, singleton="batch")
                )
                for n in range(3)
            ]
            + [lambda: runtime.ledger.enqueue(TaskRequest("echo", {"n": 9}))]
        )
        queued(4)
    for thread in threads:
        thread.join(timeout=30)
    outcomes = results[:3]
    assert all(isinstance(o, tuple) for o in outcomes), outcomes
    created = [task for task, new in outcomes if new]
    assert len(created) == 1
    assert {task.id for task, _ in outcomes} == {created[0].id}
    assert isinstance(results[3], Task)


def test_the_key_is_free_again_after_a_success_recorded_by_a_worker_round(
    runtime: Runtime,
) -> None:
    first = runtime.ledger.enqueue(TaskRequest("echo", singleton="daily"))
    dispatch = dispatch_of(runtime)
    assert [c.task_id for c in dispatch.claim(["default"], 1, "w1")] == [first.id]
    running, created = runtime.ledger.enqueue_once(TaskRequest("echo", singleton="daily"))
    assert not created and running.id == first.id  # running still holds it
    dispatch.claim(["default"], 0, "w1", outcomes=[AttemptOutcome(first.id, 1, Success({}))])
    assert runtime.store.load(first.id).state.value == "succeeded"
    assert key_rows(runtime) == []  # released with the success, in its transaction
    second, created = runtime.ledger.enqueue_once(TaskRequest("echo", singleton="daily"))
    assert created and second.id != first.id


def test_a_retry_keeps_the_key_and_a_final_failure_frees_it(runtime: Runtime) -> None:
    first = runtime.ledger.enqueue(TaskRequest("echo", singleton="flaky", max_attempts=2))
    attempt = start(runtime.store, first.id)
    task = runtime.store.load(first.id)
    task.fail(attempt, "RuntimeError", "boom")
    task.schedule_retry(now())  # attempt 1 failed, a retry is due at once
    runtime.store.save(task)
    holder, created = runtime.ledger.enqueue_once(TaskRequest("echo", singleton="flaky"))
    assert not created and holder.id == first.id
    assert holder.state.value == "scheduled" and holder.attempts == 1
    dispatch = dispatch_of(runtime)
    assert [c.task_id for c in dispatch.claim(["default"], 1, "w1")] == [first.id]
    failure = Failure("RuntimeError", "boom again")
    dispatch.complete([AttemptOutcome(first.id, 2, failure)])
    assert runtime.store.load(first.id).state.value == "failed"  # no attempt left
    assert key_rows(runtime) == []
    second, created = runtime.ledger.enqueue_once(TaskRequest("echo", singleton="flaky"))
    assert created and second.id != first.id


def test_a_cancel_frees_the_key(runtime: Runtime) -> None:
    first = runtime.ledger.enqueue(TaskRequest("echo", singleton="c"))
    runtime.ledger.cancel(first.id, reason="not needed")
    assert key_rows(runtime) == []
    second, created = runtime.ledger.enqueue_once(TaskRequest("echo", singleton="c"))
    assert created and second.id != first.id


def test_a_template_renders_the_key_from_the_args(runtime: Runtime) -> None:
    acme, _ = runtime.ledger.enqueue_once(
        TaskRequest("echo", {"customer": "acme"}, singleton="report:{customer}")
    )
    other, created_other = runtime.ledger.enqueue_once(
        TaskRequest("echo", {"customer": "globex"}, singleton="report:{customer}")
    )
    again, created_again = runtime.ledger.enqueue_once(
        TaskRequest("echo", {"customer": "acme", "x": 1}, singleton="report:{customer}")
    )
    assert created_other and other.id != acme.id
    assert not created_again and again.id == acme.id
    assert [key for _, key, _ in key_rows(runtime)] == ["report:acme", "report:globex"]


def test_an_idempotent_enqueue_of_a_held_singleton_key_answers_with_the_holder(
    runtime: Runtime,
) -> None:
    """How a cron tick of a singleton type meets a run still going: its own idempotency key
    is free, the singleton key is not; the tick is answered with the running task, and its
    key is not taken (nothing stored)."""
    running = runtime.ledger.enqueue(TaskRequest("echo", singleton="report"))
    start(runtime.store, running.id)
    head = runtime.store.head_position()
    tick = TaskRequest("echo", idempotency_key="schedule:report:t2", singleton="report")
    holder, created = runtime.ledger.enqueue_once(tick)
    assert not created and holder.id == running.id
    assert runtime.store.head_position() == head


def test_keys_are_scoped_to_the_task_type(runtime: Runtime) -> None:
    echo, _ = runtime.ledger.enqueue_once(TaskRequest("echo", singleton="shared"))
    other, created = runtime.ledger.enqueue_once(TaskRequest("sleep", singleton="shared"))
    assert created and other.id != echo.id


@pytest.mark.parametrize(
    ("singleton", "message"),
    [
        ("", "singleton must be a non-empty string"),
        ("   ", "singleton must be a non-empty string"),
        ("report:{customer}", "needs the argument 'customer'"),
        ("x" * 201, "at most 200 characters"),
    ],
)
def test_a_bad_key_is_refused_and_nothing_is_stored(
    runtime: Runtime, singleton: str, message: str
) -> None:
    head = runtime.store.head_position()
    with pytest.raises(InvalidSubmission, match=message):
        runtime.ledger.enqueue_once(TaskRequest("echo", {"n": 1}, singleton=singleton))
    assert runtime.store.head_position() == head
    assert key_rows(runtime) == []


def test_a_graph_naming_a_held_key_is_refused_and_stores_nothing(runtime: Runtime) -> None:
    holder = runtime.ledger.enqueue(TaskRequest("echo", singleton="g"))
    head = runtime.store.head_position()
    with pytest.raises(SingletonKeyTaken, match=f"'g' of 'echo' is held by task {holder.id}"):
        runtime.ledger.enqueue_graph(
            [TaskRequest("echo", ref="a"), TaskRequest("echo", ref="b", singleton="g")]
        )
    with pytest.raises(SingletonKeyTaken, match="named twice"):
        runtime.ledger.enqueue_graph(
            [
                TaskRequest("echo", ref="a", singleton="h"),
                TaskRequest("echo", ref="b", singleton="h"),
            ]
        )
    assert runtime.store.head_position() == head
    tasks = runtime.ledger.enqueue_graph(
        [TaskRequest("echo", ref="a", singleton="h"), TaskRequest("echo", ref="b")]
    )
    assert ("echo", "h", tasks[0].id) in key_rows(runtime)


def test_enqueue_in_takes_the_key_only_if_the_caller_commits(
    runtime: Runtime, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT 1")
        runtime.ledger.enqueue_in(conn, [TaskRequest("echo", singleton="tx")])
        conn.rollback()
    assert key_rows(runtime) == []
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT 1")
        [task] = runtime.ledger.enqueue_in(conn, [TaskRequest("echo", singleton="tx")])
        conn.commit()
    assert key_rows(runtime) == [("echo", "tx", task.id)]


REGISTRY = """
[queues.default]
concurrency = 4

[task_types.sync]
adapter = "python"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
singleton = "sync:{account}"
"""


@pytest.fixture
def sync_runtime(
    ledger_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Runtime]:
    monkeypatch.setenv("LEDGER_CONFIG", str(write_config(tmp_path, REGISTRY)))
    rt = open_runtime(pool_size=2)
    yield rt
    rt.close()


def test_a_task_type_singleton_applies_to_every_enqueue_of_the_type(sync_runtime: Runtime) -> None:
    ledger = sync_runtime.ledger
    first, _ = ledger.enqueue_once(TaskRequest("sync", {"account": 7}))
    again, created = ledger.enqueue_once(TaskRequest("sync", {"account": 7, "full": True}))
    other, created_other = ledger.enqueue_once(TaskRequest("sync", {"account": 8}))
    assert first.singleton_key == "sync:7"
    assert not created and again.id == first.id
    assert created_other and other.id != first.id
    own, created_own = ledger.enqueue_once(TaskRequest("sync", {"account": 7}, singleton="own"))
    assert created_own and own.singleton_key == "own"  # the request's key over the type's
    with pytest.raises(InvalidSubmission, match="needs the argument 'account'"):
        ledger.enqueue_once(TaskRequest("sync", {}))


def test_a_manual_retry_takes_the_key_again_or_is_refused_while_another_holds_it(
    runtime: Runtime,
) -> None:
    first = runtime.ledger.enqueue(TaskRequest("echo", singleton="once"))
    runtime.ledger.cancel(first.id)
    runtime.ledger.retry(first.id)  # the key was free: the retried task holds it again
    assert key_rows(runtime) == [("echo", "once", first.id)]
    holder, created = runtime.ledger.enqueue_once(TaskRequest("echo", singleton="once"))
    assert not created and holder.id == first.id
    runtime.ledger.cancel(first.id)
    second = runtime.ledger.enqueue(TaskRequest("echo", singleton="once"))
    head = runtime.store.head_position()
    with pytest.raises(SingletonKeyTaken, match=f"held by task {second.id}"):
        runtime.ledger.retry(first.id)
    assert runtime.store.head_position() == head
    assert runtime.store.load(first.id).state.value == "cancelled"


def test_enqueues_from_two_nodes_of_one_key_make_one_task(runtime: Runtime) -> None:
    """Two runtimes on one schema (each its own pool and group commit, as two nodes are)."""
    other = open_runtime(pool_size=2)
    try:
        barrier = threading.Barrier(6)
        results: list[tuple[Task, bool]] = []

        def enqueue(rt: Runtime, n: int) -> None:
            barrier.wait()
            results.append(rt.ledger.enqueue_once(TaskRequest("echo", {"n": n}, singleton="x")))

        threads = [
            threading.Thread(target=enqueue, args=(rt, n))
            for n, rt in enumerate([runtime, other] * 3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        other.close()
    assert len(results) == 6 and len({task.id for task, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 5 + [True]
