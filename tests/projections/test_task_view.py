"""The task view follows the log exactly once, and rebuilds to identical tables."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

from psycopg import sql

from execution_ledger.adapters.postgres.task_queries import TaskFilter, get_task_row, list_tasks
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from tests.helpers import fail, start, succeed


def dump(runtime: Runtime, table: str, order: str) -> list[dict[str, object]]:
    with runtime.store.transaction() as cur:
        query = sql.SQL("SELECT * FROM {} ORDER BY {}").format(
            sql.Identifier(runtime.settings.schema, table), sql.SQL(order)
        )
        return cur.execute(query).fetchall()


def folded_batched_and_one_by_one(
    database_url: str, events: list[tuple[Any, int]]
) -> tuple[list[Any], list[Any]]:
    """The task view's rows after folding ``events`` in a new schema, as one batch and one
    by one; each row ends with whether its result and its error are SQL NULL (a JSON null
    loads as None too)."""
    import psycopg

    from execution_ledger.projections.task_view import TaskView

    rows = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        for batched in (True, False):
            schema = f"tv_{uuid4().hex[:8]}"
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            view = TaskView(schema)
            with conn.transaction(), conn.cursor() as cur:
                view.create(cur)
                if batched:
                    view.apply_batch(cur, events)
                else:
                    for event, position in events:
                        view.apply(cur, event, position)
            query = sql.SQL(
                "SELECT *, result IS NULL AS no_result, error IS NULL AS no_error FROM {} "
                "ORDER BY task_id"
            ).format(sql.Identifier(schema, "task_view"))
            rows.append(conn.execute(query).fetchall())
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return rows[0], rows[1]


def test_the_task_view_shows_state_attempts_result_and_error(runtime: Runtime) -> None:
    good = runtime.ledger.enqueue(TaskRequest("add", {"a": 1, "b": 2}))
    bad = runtime.ledger.enqueue(TaskRequest("fail"))
    succeed(runtime.store, good.id, {"sum": 3})
    fail(runtime.store, bad.id)
    runtime.catch_up()
    good_row = get_task_row(runtime.store, good.id)
    assert (good_row["state"], good_row["attempts"], good_row["result"]) == (
        "succeeded",
        1,
        {"sum": 3},
    )
    assert good_row["started_at"] <= good_row["finished_at"]
    bad_row = get_task_row(runtime.store, bad.id)
    assert bad_row["state"] == "failed"
    assert bad_row["error"]["class"] == "RuntimeError"


def test_tasks_are_listed_newest_first_with_filters_and_cursors(runtime: Runtime) -> None:
    ids = [
        runtime.ledger.enqueue(TaskRequest("echo", {"n": i}, tags=("batch",))).id for i in range(5)
    ]
    runtime.ledger.enqueue(TaskRequest("add", {"a": 1, "b": 1}))
    runtime.catch_up()
    first = list_tasks(runtime.store, TaskFilter(type_name="echo"), limit=3)
    assert [r["task_id"] for r in first.rows] == ids[::-1][:3]
    second = list_tasks(
        runtime.store, TaskFilter(type_name="echo"), limit=3, cursor=first.next_cursor
    )
    assert [r["task_id"] for r in second.rows] == ids[::-1][3:]
    assert second.next_cursor is None
    assert len(list_tasks(runtime.store, TaskFilter(tag="batch")).rows) == 5
    assert list_tasks(runtime.store, TaskFilter(state="succeeded")).rows == []


def test_a_projection_never_counts_an_event_twice_across_runs(runtime: Runtime) -> None:
    runtime.ledger.enqueue(TaskRequest("echo"))
    runner = runtime.runners["task_view"]
    assert runner.catch_up() == 1
    assert runner.catch_up() == 0
    assert runner.position() == runtime.store.head_position()


def test_concurrent_writers_and_a_live_reader_skip_no_event(runtime: Runtime) -> None:
    """Positions commit in order (the library's table lock): a reader polling while four
    writers append sees every task exactly once."""
    runner = runtime.runners["task_view"]
    done = threading.Event()
    reader = threading.Thread(target=lambda: [runner.catch_up() for _ in iter(done.is_set, True)])
    reader.start()

    def write(worker: int) -> None:
        for i in range(25):
            runtime.ledger.enqueue(TaskRequest("echo", {"worker": worker, "i": i}))

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()
    runner.catch_up()
    rows = dump(runtime, "task_view", "task_id")
    assert len(rows) == 100
    assert runner.position() == runtime.store.head_position()


def test_rebuilding_the_task_view_gives_identical_tables(runtime: Runtime) -> None:
    tasks = runtime.ledger.enqueue_graph(
        [
            TaskRequest("echo", ref="a"),
            TaskRequest("echo", ref="b", depends_on=("a",)),
            TaskRequest("fail", ref="c"),
        ]
    )
    runtime.catch_up()
    succeed(runtime.store, tasks[0].id)
    fail(runtime.store, tasks[2].id, retry=True)
    runtime.ledger.cancel(tasks[1].id, reason="changed my mind")
    runtime.catch_up()
    before = dump(runtime, "task_view", "task_id")
    replayed = runtime.runners["task_view"].rebuild()
    assert replayed == runtime.store.head_position() > 0
    assert dump(runtime, "task_view", "task_id") == before


def test_a_batch_of_new_rows_in_one_statement_equals_them_one_by_one(
    runtime: Runtime, database_url: str
) -> None:
    """The batch path (new rows as one JSON text) against the per-event path, on the same
    events: tags, args, dependencies, a scheduled and a waiting task, then their updates."""
    from datetime import UTC, datetime, timedelta


    later = datetime.now(UTC) + timedelta(hours=1)
    runtime.ledger.enqueue_graph(
        [
            TaskRequest(
                "echo", {"text": "grüße \u2603", "n": [1, 2.5, None]}, ref="a", tags=("x", "y")
            ),
            TaskRequest("echo", ref="b", depends_on=("a",), priority=7, lane="agent:1"),
            TaskRequest("echo", ref="c", run_at=later, idempotency_key="k-1"),
        ]
    )
    one = runtime.ledger.enqueue(TaskRequest("fail", {}))
    succeed(runtime.store, one.id)
    # Updates of every kind of value: a JSON null result (not SQL NULL), a nested one, errors.
    for result in ({"deep": [1, {"x": "é"}], "f": 0.5}, "text"):
        succeed(runtime.store, runtime.ledger.enqueue(TaskRequest("echo", {})).id, result)
    returns_nothing = runtime.ledger.enqueue(TaskRequest("echo", {})).id
    attempt = start(runtime.store, returns_nothing)
    task = runtime.store.load(returns_nothing)
    task.succeed(attempt, None)
    runtime.store.save(task)
    fail(runtime.store, runtime.ledger.enqueue(TaskRequest("echo", {})).id)
    runtime.ledger.cancel(runtime.ledger.enqueue(TaskRequest("echo", {})).id, reason="no")
    events = [(r.event, r.position) for r in runtime.store.read(0, 1000)]
    batched, one_by_one = folded_batched_and_one_by_one(database_url, events)
    assert len(batched) == 9 and batched == one_by_one
    assert sum(not row[-2] for row in batched) == 4  # three results and a JSON null


def test_a_batch_of_every_kind_of_event_equals_them_one_by_one(
    runtime: Runtime, database_url: str
) -> None:
    """Every kind of event the task view folds, made through the domain's own methods and
    stored, folded as one batch (merged per task, one statement per set of columns; a manual
    retry flushes what is gathered) and one by one: the same rows."""
    from datetime import timedelta

    from execution_ledger.domain.task import Task, TaskState
    from execution_ledger.domain.timeouts import TimeoutKind
    from tests.helpers import now

    store = runtime.store

    def change(task_id: UUID, act: Callable[[Task], object]) -> None:
        task = store.load(task_id)
        act(task)
        store.save(task)

    later = now() + timedelta(hours=1)
    a, b, c, d = runtime.ledger.enqueue_graph(
        [
            TaskRequest("echo", {"x": [1, 2.5, None]}, ref="a", tags=("t",)),
            TaskRequest("echo", ref="b", depends_on=("a",), lane="agent:7"),
            TaskRequest("echo", ref="c", depends_on=("a",)),
            TaskRequest("echo", ref="d", run_at=later),
        ]
    )
    attempt = start(store, a.id)
    change(a.id, lambda t: t.heartbeat(attempt, now() + timedelta(seconds=60)))
    change(a.id, lambda t: t.heartbeat(attempt, now() + timedelta(seconds=90), 0.5, "half"))
    change(a.id, lambda t: t.heartbeat(attempt, now() + timedelta(seconds=95), None, ""))
    change(a.id, lambda t: t.succeed(attempt, None))  # a JSON null result
    change(b.id, lambda t: t.unblock(now()))
    change(c.id, lambda t: t.skip("a dependency failed", a.id))
    change(b.id, lambda t: t.reprioritise(5, "ops"))
    change(b.id, lambda t: t.move("agents", "ops"))
    change(d.id, lambda t: t.debounce({"x": 2}, later + timedelta(minutes=1), "api", True))
    change(d.id, lambda t: t.debounce({"x": 3}, later + timedelta(minutes=2), "api", False))
    change(d.id, lambda t: t.cancel("ops"))  # no reason: "cancelled"
    e = runtime.ledger.enqueue(TaskRequest("echo", {}))
    attempt = start(store, e.id)
    change(e.id, lambda t: t.time_out(TimeoutKind.START_TO_CLOSE))
    change(e.id, lambda t: t.schedule_retry(now()))
    for retryable in (True, False):  # the third attempt spends the budget of three
        attempt = start(store, e.id)
        task = store.load(e.id)
        task.fail(attempt, "ValueError", "bad \u2603", retryable=retryable)
        store.save(task)
        if retryable:
            change(e.id, lambda t: t.schedule_retry(now()))
    parent = runtime.ledger.enqueue(TaskRequest("echo", {}))
    attempt = start(store, parent.id)
    child = runtime.ledger.enqueue(TaskRequest("echo", {}))
    change(parent.id, lambda t: t.spawn_children(attempt, [child.id], True, "fail", {"r": 1}, {}))
    succeed(store, child.id, {"child": True})
    change(parent.id, lambda t: t.child_ended(child.id, TaskState.SUCCEEDED, {"child": True}))
    waiting = runtime.ledger.enqueue(TaskRequest("echo", {}))
    attempt = start(store, waiting.id)
    change(waiting.id, lambda t: t.await_signals(attempt, ["go", "now"], {"held": 1}, {}))
    change(waiting.id, lambda t: t.signal("go", {"data": 1}, "api", now()))
    change(waiting.id, lambda t: t.signal("now", None, "api", now()))
    change(e.id, lambda t: t.retry_manually(now(), "ops"))  # depends on the row as it is
    attempt = start(store, e.id)
    change(e.id, lambda t: t.succeed(attempt, {"at last": True}))
    events = [(r.event, r.position) for r in store.read(0, 10_000)]
    kinds = {type(event).__name__ for event, _ in events}
    every_kind = {n for n, c in vars(Task).items() if isinstance(c, type) and n.startswith("Task")}
    assert kinds == every_kind, every_kind - kinds
    batched, one_by_one = folded_batched_and_one_by_one(database_url, events)
    assert len(batched) == 8 and batched == one_by_one
