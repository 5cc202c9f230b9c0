"""The readiness graph's batch path: a batch leaves the tables and returns the changes that
applying its events one by one does, with its plain transitions and new root nodes each
written in one statement."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from psycopg import sql

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.timeouts import TimeoutOverrides
from execution_ledger.projections.readiness import EDGES, NODES, ReadinessGraph
from tests.helpers import fail, now, start, succeed
from tests.projections.test_task_view import dump


def varied_history(runtime: Runtime) -> None:
    """Roots (plain, scheduled, with timeouts and a priority), a diamond whose top succeeds,
    a pair whose top fails, a retry, a cancel, a start with no end."""
    ledger = runtime.ledger
    plain = ledger.enqueue(TaskRequest("echo", {"n": 1}))
    ledger.enqueue(TaskRequest("echo", run_at=now() + timedelta(hours=1), priority=7))
    timed = ledger.enqueue(
        TaskRequest("echo", timeouts=TimeoutOverrides(schedule_to_start=30, schedule_to_close=90))
    )
    diamond = ledger.enqueue_graph(
        [
            TaskRequest("echo", ref="top"),
            TaskRequest("echo", ref="left", depends_on=("top",)),
            TaskRequest("echo", ref="right", depends_on=("top",)),
            TaskRequest("echo", ref="bottom", depends_on=("left", "right")),
        ]
    )
    doomed = ledger.enqueue_graph(
        [TaskRequest("echo", ref="a"), TaskRequest("echo", ref="b", depends_on=("a",))]
    )
    succeed(runtime.store, plain.id)
    start(runtime.store, timed.id)
    succeed(runtime.store, diamond[0].id)
    fail(runtime.store, doomed[0].id)
    retried = ledger.enqueue(TaskRequest("echo"))
    fail(runtime.store, retried.id, retry=True)
    ledger.cancel(ledger.enqueue(TaskRequest("echo")).id)
    runtime.catch_up()  # the cascade's own events (unblocked, skipped) join the log


def tables(runtime: Runtime) -> tuple[Any, ...]:
    return (dump(runtime, NODES, "task_id"), dump(runtime, EDGES, "parent, child"))


def empty_tables(runtime: Runtime) -> None:
    with runtime.store.transaction() as cursor:
        for table in (NODES, EDGES):
            cursor.execute(
                sql.SQL("TRUNCATE {}").format(sql.Identifier(runtime.settings.schema, table))
            )


class CountingCursor:
    """A real cursor that counts the statements sent through it."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor
        self.statements = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return self.cursor.execute(*args, **kwargs)

    def fetchall(self) -> Any:
        return self.cursor.fetchall()


def test_a_batch_leaves_the_tables_and_changes_of_its_events_applied_one_by_one(
    runtime: Runtime,
) -> None:
    varied_history(runtime)
    events = [(r.event, r.position) for r in runtime.store.read(0, 10_000)]
    schema = runtime.settings.schema

    empty_tables(runtime)
    one_by_one = ReadinessGraph(schema)
    with runtime.store.transaction() as cursor:
        changes = [c for e, p in events for c in one_by_one.apply(cursor, e, p)]
    expected = tables(runtime)
    assert len(expected[0]) == 11 and len(expected[1]) == 5
    assert {type(c).__name__ for c in changes} == {"Unblocked", "Doomed"}

    empty_tables(runtime)
    with runtime.store.transaction() as cursor:
        assert ReadinessGraph(schema).apply_batch(cursor, events) == changes
    assert tables(runtime) == expected

    empty_tables(runtime)  # in small batches, as a runner following the log applies them
    batched = ReadinessGraph(schema)
    in_small_batches = []
    for first in range(0, len(events), 3):
        with runtime.store.transaction() as cursor:
            in_small_batches += batched.apply_batch(cursor, events[first : first + 3])
    assert in_small_batches == changes
    assert tables(runtime) == expected


def test_root_enqueues_and_plain_transitions_are_written_in_two_statements(
    runtime: Runtime,
) -> None:
    tasks = [runtime.ledger.enqueue(TaskRequest("echo", {"n": n})) for n in range(20)]
    for task in tasks[:10]:
        succeed(runtime.store, task.id)
    events = [(r.event, r.position) for r in runtime.store.read(0, 10_000)]
    assert len(events) == 40

    empty_tables(runtime)
    with runtime.store.transaction() as cursor:
        counting = CountingCursor(cursor)
        assert ReadinessGraph(runtime.settings.schema).apply_batch(counting, events) == []
    assert counting.statements == 2  # the 20 new nodes, then the 20 transitions
    states = {row["task_id"]: row["state"] for row in dump(runtime, NODES, "task_id")}
    assert states == {t.id: "succeeded" if t in tasks[:10] else "ready" for t in tasks}


def test_ends_of_tasks_enqueued_before_a_restart_are_looked_up_in_one_statement(
    runtime: Runtime,
) -> None:
    """A new instance (a restarted projection process, a take-over) has not seen the tasks
    enqueued: it looks up which of the batch's ending tasks have dependents in one
    statement, not one per end, and still unblocks the dependent of the one that has."""
    tasks = [runtime.ledger.enqueue(TaskRequest("echo", {"n": n})) for n in range(10)]
    pair = runtime.ledger.enqueue_graph(
        [TaskRequest("echo", ref="top"), TaskRequest("echo", ref="below", depends_on=("top",))]
    )
    enqueued = [(r.event, r.position) for r in runtime.store.read(0, 10_000)]
    for task in [*tasks, pair[0]]:
        succeed(runtime.store, task.id)
    ends = [(r.event, r.position) for r in runtime.store.read(enqueued[-1][1], 10_000)]
    assert len(ends) == 22  # started and succeeded, eleven times

    schema = runtime.settings.schema
    empty_tables(runtime)
    with runtime.store.transaction() as cursor:
        ReadinessGraph(schema).apply_batch(cursor, enqueued)
    with runtime.store.transaction() as cursor:
        counting = CountingCursor(cursor)
        changes = ReadinessGraph(schema).apply_batch(counting, ends)
    assert [(type(c).__name__, c.task_id) for c in changes] == [("Unblocked", pair[1].id)]
    # The look-up, the moves before the top's end, then its update, its dependents and
    # their pending count.
    assert counting.statements == 5
    states = {row["task_id"]: row["state"] for row in dump(runtime, NODES, "task_id")}
    assert states == {**{t.id: "succeeded" for t in [*tasks, pair[0]]}, pair[1].id: "blocked"}
