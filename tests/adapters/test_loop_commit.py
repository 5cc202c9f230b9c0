"""Saves awaited on an event loop (the HTTP API's enqueue) commit on the loop itself, on a
real PostgreSQL: they share one transaction, each caller gets its own outcome, and the
loop's connection survives the server closing it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from execution_ledger.adapters.ledger import SYSTEM
from execution_ledger.adapters.postgres.connection_pool import has_input
from execution_ledger.adapters.postgres.loop_commit import LoopCommit
from execution_ledger.adapters.postgres.recorder import Statement
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import LedgerError
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import Task

BLOCKER_KEY = 740_032


def plan(runtime: Runtime, n: int) -> Task:
    tasks, _ = runtime.ledger._plan([TaskRequest("echo", {"n": n})], SYSTEM)
    return tasks[0]


async def until(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def held_first_commit(runtime: Runtime, database_url: str) -> AsyncIterator[LoopCommit]:
    """The loop's leader held inside its commit (its statement waits for an advisory lock
    this test holds) until the block ends; yields the loop's group commit."""
    loop_commit = runtime.store.loop_commit()
    holder = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    try:
        await holder.execute("SELECT pg_advisory_lock(%s)", (BLOCKER_KEY,))
        blocker = Statement("SELECT pg_advisory_xact_lock(%s)", (BLOCKER_KEY,))
        first = asyncio.create_task(runtime.store.save_async(plan(runtime, 0), inline=[blocker]))
        await until(lambda: loop_commit.leading and loop_commit.queued == 0, "the first commit")
        yield loop_commit
        await holder.execute("SELECT pg_advisory_unlock(%s)", (BLOCKER_KEY,))
        await first
    finally:
        await holder.close()


def transactions_of(runtime: Runtime, task_ids: list[Any]) -> int:
    with runtime.store.transaction() as cursor:
        rows = cursor.execute(
            f'SELECT DISTINCT xmin::text AS tx FROM "{runtime.store.schema}".ledger_events '
            "WHERE originator_id = ANY(%s)",
            (task_ids,),
        ).fetchall()
    return len(rows)


def test_saves_awaited_on_a_loop_share_one_transaction_committed_on_the_loop(
    runtime: Runtime, database_url: str
) -> None:
    threads: set[str] = set()

    async def scenario() -> list[Any]:
        async with held_first_commit(runtime, database_url) as loop_commit:
            waiting = [
                asyncio.create_task(
                    runtime.ledger.enqueue_recorded_async(TaskRequest("echo", {"n": n}))
                )
                for n in range(1, 4)
            ]
            await until(lambda: loop_commit.queued == 3, "three saves queued")
            threads.update(t.name for t in threading.enumerate())
        done = await asyncio.gather(*waiting)
        assert loop_commit.batches == 2  # the held one, then the three together
        return done

    before = {t.name for t in threading.enumerate()}
    done = asyncio.run(scenario())
    assert threads <= before  # no thread was started to commit
    assert all(created for _, created, _ in done)
    ids = [task.id for task, _, _ in done]
    assert transactions_of(runtime, ids) == 1
    stored = {r.event.originator_id: r.position for r in runtime.store.read(0, 100)}
    for task, _, recorded in done:  # each caller got its own event's position
        assert [event.position for event in recorded] == [stored[task.id]]
        assert runtime.store.load(task.id).version == task.version


def test_a_conflict_among_a_loops_saves_fails_only_its_own_caller(
    runtime: Runtime, database_url: str
) -> None:
    stored = runtime.ledger.enqueue(TaskRequest("echo", {"n": 1}))
    stale_a, stale_b = runtime.store.load(stored.id), runtime.store.load(stored.id)
    stale_a.cancel(by="a", reason="first")
    stale_b.cancel(by="b", reason="second")  # same version: only one may be stored

    async def scenario() -> list[Any]:
        async with held_first_commit(runtime, database_url) as loop_commit:
            calls = asyncio.gather(
                runtime.ledger.enqueue_recorded_async(TaskRequest("echo", {"n": 2})),
                runtime.store.save_async(stale_a),
                runtime.store.save_async(stale_b),
                runtime.ledger.enqueue_recorded_async(TaskRequest("echo", {"n": 3})),
                return_exceptions=True,
            )
            await until(lambda: loop_commit.queued == 4, "four saves queued")
        return list(await calls)

    first, saved_a, saved_b, last = asyncio.run(scenario())
    errors = [r for r in (saved_a, saved_b) if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], IntegrityError)
    assert runtime.store.load(stored.id).state.value == "cancelled"
    for task, created, _ in (first, last):
        assert created and runtime.store.load(task.id).version == task.version


def test_a_lone_save_from_a_loop_commits_at_once(runtime: Runtime) -> None:
    async def scenario() -> tuple[Any, int]:
        done = await runtime.ledger.enqueue_recorded_async(TaskRequest("echo", {"n": 1}))
        return done, runtime.store.loop_commit().batches

    (task, created, recorded), batches = asyncio.run(scenario())
    assert created and batches == 1
    assert runtime.store.load(task.id).version == task.version == len(recorded)


def test_a_refused_submission_from_a_loop_stores_nothing(runtime: Runtime) -> None:
    before = runtime.store.head_position()
    with pytest.raises(LedgerError):
        asyncio.run(runtime.ledger.enqueue_recorded_async(TaskRequest("no-such-type")))
    assert runtime.store.head_position() == before


def test_a_caller_cancelled_while_it_waits_still_has_its_save_committed(
    runtime: Runtime, database_url: str
) -> None:
    """As a thread's save would: the unit was handed over, so it commits."""
    task = plan(runtime, 7)

    async def scenario() -> None:
        async with held_first_commit(runtime, database_url) as loop_commit:
            caller = asyncio.create_task(runtime.store.save_async(task))
            await until(lambda: loop_commit.queued == 1, "the save queued")
            caller.cancel()
        await until(lambda: not loop_commit.leading, "the commits to end")
        with pytest.raises(asyncio.CancelledError):
            await caller

    asyncio.run(scenario())
    assert runtime.store.load(task.id).version == task.version


def test_the_loops_connection_is_replaced_after_the_server_closed_it(
    runtime: Runtime, database_url: str
) -> None:
    async def scenario() -> Task:
        await runtime.ledger.enqueue_recorded_async(TaskRequest("echo", {"n": 1}))
        connection = runtime.store.loop_commit()._connection
        assert connection is not None
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (connection.info.backend_pid,))
        await until(lambda: connection.closed or has_input(connection), "the server's close")
        task, created, _ = await runtime.ledger.enqueue_recorded_async(
            TaskRequest("echo", {"n": 2})
        )
        assert created
        return task

    task = asyncio.run(scenario())
    assert runtime.store.load(task.id).version == task.version


def test_the_connection_of_an_ended_loop_is_closed_when_the_next_loop_saves(
    runtime: Runtime,
) -> None:
    async def save() -> LoopCommit:
        await runtime.ledger.enqueue_recorded_async(TaskRequest("echo", {"n": 1}))
        return runtime.store.loop_commit()

    first = asyncio.run(save())
    connection = first._connection
    assert connection is not None and not connection.closed
    second = asyncio.run(save())
    assert second is not first
    assert connection.closed and first._connection is None
