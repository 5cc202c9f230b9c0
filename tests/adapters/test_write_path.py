"""The write path on a real PostgreSQL: writers append without a table lock, readers never
pass a position that a slower transaction fills later, and group commit gives each caller
its own outcome."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from execution_ledger.adapters.ledger import SYSTEM
from execution_ledger.adapters.postgres import event_store
from execution_ledger.adapters.postgres.recorder import Statement
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import Task

BLOCKER_KEY = 740_031


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def plan(runtime: Runtime, n: int) -> Task:
    tasks, _ = runtime.ledger._plan([TaskRequest("echo", {"n": n})], SYSTEM)
    return tasks[0]


def positions_of(runtime: Runtime, task_ids: list[UUID]) -> dict[UUID, int]:
    with runtime.store.transaction() as cursor:
        rows = cursor.execute(
            f'SELECT originator_id, min(notification_id) AS p FROM "{runtime.store.schema}".'
            "ledger_events WHERE originator_id = ANY(%s) GROUP BY originator_id",
            (task_ids,),
        ).fetchall()
    return {row["originator_id"]: row["p"] for row in rows}


@contextmanager
def open_writer(runtime: Runtime, database_url: str, n: int) -> Iterator[Task]:
    """A writer that has appended one task's events and holds its transaction open."""
    with psycopg.connect(database_url) as conn:
        task = plan(runtime, n)
        runtime.store.append_in(runtime.store.adopt(conn), [task])
        yield task
        conn.commit()


def test_a_reader_never_passes_an_event_whose_transaction_commits_later(
    runtime: Runtime, database_url: str
) -> None:
    runtime.ledger.enqueue(TaskRequest("echo", {"n": 0}))
    start = runtime.store.head_position()
    with open_writer(runtime, database_url, 1) as slow:
        fast = runtime.ledger.enqueue(TaskRequest("echo", {"n": 2}))  # commits first
        found = positions_of(runtime, [fast.id])
        assert runtime.store.read(start, 100) == []  # the open writer's position comes first
        assert runtime.store.head_position() == start
        runtime.catch_up()
        assert runtime.runners["task_view"].position() <= start
    # The slow writer committed: both are read, in position order.
    read = runtime.store.read(start, 100)
    ids = [r.event.originator_id for r in read]
    assert ids.index(slow.id) < ids.index(fast.id)
    assert positions_of(runtime, [slow.id])[slow.id] < found[fast.id]
    runtime.catch_up()
    assert {slow.id, fast.id} <= task_view_ids(runtime)


def task_view_ids(runtime: Runtime) -> set[UUID]:
    with runtime.store.transaction() as cursor:
        rows = cursor.execute(f'SELECT task_id FROM "{runtime.store.schema}".task_view').fetchall()
    return {row["task_id"] for row in rows}


def test_a_writer_that_rolls_back_holds_no_reader_back(runtime: Runtime, database_url: str) -> None:
    start = runtime.store.head_position()
    with psycopg.connect(database_url) as conn:
        runtime.store.append_in(runtime.store.adopt(conn), [plan(runtime, 1)])
        later = runtime.ledger.enqueue(TaskRequest("echo", {"n": 2}))
        assert runtime.store.read(start, 100) == []
        conn.rollback()
    read = runtime.store.read(start, 100)
    assert [r.event.originator_id for r in read] == [later.id]


def test_a_projection_catching_up_during_a_slow_write_misses_nothing(
    runtime: Runtime, database_url: str
) -> None:
    """The projection reads while the slow writer is open, then after it commits: the
    late event is in the task view (a reader that skipped it would never come back)."""
    with open_writer(runtime, database_url, 1) as slow:
        fast = [runtime.ledger.enqueue(TaskRequest("echo", {"n": n})) for n in range(2, 5)]
        runtime.catch_up()
    runtime.catch_up()
    assert {slow.id, *(task.id for task in fast)} <= task_view_ids(runtime)


@contextmanager
def held_first_commit(runtime: Runtime, database_url: str) -> Iterator[Callable[[int], None]]:
    """Hold the group's leader inside its commit (its statement waits for an advisory lock
    this test holds); yields a function that waits until N more saves are queued."""
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (BLOCKER_KEY,))
        blocker = Statement("SELECT pg_advisory_xact_lock(%s)", (BLOCKER_KEY,))
        first = threading.Thread(
            target=runtime.store.save, args=(plan(runtime, 0),), kwargs={"inline": [blocker]}
        )
        first.start()
        wait_until(lambda: runtime.store.group._leading, "the first save to lead")
        queue = runtime.store.group._queue

        def queued(count: int) -> None:
            wait_until(lambda: len(queue) >= count, f"{count} saves queued behind the leader")

        try:
            yield queued
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (BLOCKER_KEY,))
            first.join(timeout=30)


def run_all(calls: list[Callable[[], Any]]) -> tuple[list[Any], list[threading.Thread]]:
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    return results, threads


def test_saves_waiting_behind_a_commit_share_the_next_transaction(
    runtime: Runtime, database_url: str
) -> None:
    with held_first_commit(runtime, database_url) as queued:
        results, threads = run_all(
            [lambda n=n: runtime.ledger.enqueue(TaskRequest("echo", {"n": n})) for n in range(5)]
        )
        queued(5)
    for thread in threads:
        thread.join(timeout=30)
    ids = [task.id for task in results]
    with runtime.store.transaction() as cursor:
        rows = cursor.execute(
            f'SELECT DISTINCT xmin::text AS tx FROM "{runtime.store.schema}".ledger_events '
            "WHERE originator_id = ANY(%s)",
            (ids,),
        ).fetchall()
    assert len(rows) == 1  # one transaction for the five saves


def test_a_conflict_in_a_batch_fails_only_its_own_caller(
    runtime: Runtime, database_url: str
) -> None:
    stored = runtime.ledger.enqueue(TaskRequest("echo", {"n": 1}))
    stale_a, stale_b = runtime.store.load(stored.id), runtime.store.load(stored.id)
    stale_a.cancel(by="a", reason="first")
    stale_b.cancel(by="b", reason="second")  # same version: only one may be stored
    with held_first_commit(runtime, database_url) as queued:
        results, threads = run_all(
            [
                lambda: runtime.store.save(stale_a),
                lambda: runtime.ledger.enqueue(TaskRequest("echo", {"n": 2})),
                lambda: runtime.store.save(stale_b),
                lambda: runtime.ledger.enqueue(TaskRequest("echo", {"n": 3})),
            ]
        )
        queued(4)
    for thread in threads:
        thread.join(timeout=30)
    errors = [r for r in (results[0], results[2]) if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], IntegrityError)
    assert isinstance(results[1], Task) and isinstance(results[3], Task)
    for task in (results[1], results[3]):
        assert runtime.store.load(task.id).version == task.version
    assert runtime.store.load(stored.id).state.value == "cancelled"


def test_an_idempotency_key_taken_inside_a_batch_answers_with_its_holder(
    runtime: Runtime, database_url: str
) -> None:
    request = TaskRequest("echo", {"n": 1}, idempotency_key="once")
    with held_first_commit(runtime, database_url) as queued:
        results, threads = run_all(
            [lambda: runtime.ledger.enqueue_once(request) for _ in range(3)]
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


def test_a_lone_save_commits_without_waiting_for_company(runtime: Runtime) -> None:
    before = runtime.store.group.batches
    task = runtime.ledger.enqueue(TaskRequest("echo", {"n": 1}))
    assert runtime.store.group.batches == before + 1
    assert runtime.store.load(task.id).version == task.version


def test_writers_of_two_processes_do_not_wait_for_each_other(
    runtime: Runtime, database_url: str
) -> None:
    """A writer holding its transaction open does not block another writer's commit (the
    library's table lock would: the second save would wait for the first)."""
    with open_writer(runtime, database_url, 1):
        done = threading.Event()

        def save() -> None:
            runtime.ledger.enqueue(TaskRequest("echo", {"n": 2}))
            done.set()

        thread = threading.Thread(target=save)
        thread.start()
        assert done.wait(timeout=30), "a second writer waited for the open one"
        thread.join()


@pytest.mark.parametrize("count", [600])
def test_a_save_too_large_to_pipeline_still_commits_whole(runtime: Runtime, count: int) -> None:
    tasks = runtime.ledger.enqueue_graph(
        [TaskRequest("echo", {"n": n}, ref=f"t{n}") for n in range(count)]
    )
    assert len(runtime.store.read(0, count + 10)) == count
    assert runtime.store.load(tasks[-1].id).version == tasks[-1].version


@pytest.fixture
def small_streams(monkeypatch: pytest.MonkeyPatch) -> int:
    """Saves of more than 20 events stream, 7 tasks a chunk (the last one short)."""
    monkeypatch.setattr(event_store, "PIPELINED_SAVE_LIMIT", 20)
    monkeypatch.setattr(event_store, "STREAM_CHUNK", 7)
    return 7


def test_a_streamed_save_commits_every_chunk_with_positions_in_event_order(
    runtime: Runtime, small_streams: int
) -> None:
    start = runtime.store.head_position()
    tasks = [plan(runtime, n) for n in range(45)]  # seven chunks, the last of three
    saved = runtime.store.save(*tasks)
    assert [r.event.originator_id for r in saved] == [task.id for task in tasks]
    log = runtime.store.read(start, 100)
    assert [(r.position, r.event.originator_id) for r in log] == [
        (r.position, r.event.originator_id) for r in saved
    ]
    assert dispatch_rows(runtime, [task.id for task in tasks]) == len(tasks)
    runtime.catch_up()
    assert {task.id for task in tasks} <= task_view_ids(runtime)


def test_a_streamed_save_refused_in_a_later_chunk_stores_nothing(
    runtime: Runtime, small_streams: int
) -> None:
    start = runtime.store.head_position()
    stored = plan(runtime, 0)
    again = copy.deepcopy(stored)  # the same new task: its id is in the log once saved
    runtime.store.save(stored)
    tasks = [plan(runtime, n) for n in range(1, 30)]
    tasks.insert(25, again)  # in the fourth chunk
    with pytest.raises(IntegrityError):
        runtime.store.save(*tasks)
    assert [r.event.originator_id for r in runtime.store.read(start, 100)] == [stored.id]
    assert dispatch_rows(runtime, [task.id for task in tasks]) == 1  # ``stored``'s own
    runtime.ledger.enqueue(TaskRequest("echo", {"n": "after"}))  # the pool still serves


def test_a_failure_while_mapping_a_later_chunk_rolls_back_the_chunks_sent(
    runtime: Runtime, small_streams: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = runtime.store.head_position()
    mapped = runtime.store._unit
    calls = []

    def fail_third(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("an event that cannot be mapped")
        return mapped(*args)

    monkeypatch.setattr(runtime.store, "_unit", fail_third)
    tasks = [plan(runtime, n) for n in range(30)]
    with pytest.raises(ValueError, match="cannot be mapped"):
        runtime.store.save(*tasks)
    assert runtime.store.read(start, 100) == []
    assert dispatch_rows(runtime, [task.id for task in tasks]) == 0
    monkeypatch.undo()
    runtime.ledger.enqueue(TaskRequest("echo", {"n": "after"}))  # the pool still serves
    assert len(runtime.store.read(start, 100)) == 1


def test_a_large_graph_with_idempotency_keys_streams_and_keeps_its_keys(
    runtime: Runtime, small_streams: int
) -> None:
    requests = [TaskRequest("echo", {"n": n}, idempotency_key=f"k{n}") for n in range(30)]
    tasks = runtime.ledger.enqueue_graph(requests)
    clash = TaskRequest("echo", {"n": "clash"}, idempotency_key="k17")
    assert runtime.ledger.enqueue(clash).id == tasks[17].id  # the holder answers


def dispatch_rows(runtime: Runtime, task_ids: list[UUID]) -> int:
    with runtime.store.transaction() as cursor:
        row = cursor.execute(
            f'SELECT count(*) AS n FROM "{runtime.store.schema}".dispatch_queue '
            "WHERE task_id = ANY(%s)",
            (task_ids,),
        ).fetchone()
    assert row is not None
    return int(row["n"])
