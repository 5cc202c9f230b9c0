"""The learning dataset: the fold turns each finished attempt into one row (pure, on real Task
aggregates), and the live projection holds exactly the rows a replay of the log gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any
from uuid import UUID

from psycopg import sql

from execution_ledger.adapters.dataset.replay import Replay
from execution_ledger.adapters.postgres.projection_runner import ProjectionRunner
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.registry import build_registry
from execution_ledger.domain.submission import Requester, SubmissionContext, TaskRequest, plan_tasks
from execution_ledger.domain.task import Task
from execution_ledger.domain.timeouts import TimeoutKind
from execution_ledger.projections.attempt_fold import (
    COLUMNS,
    AttemptFold,
    AttemptRow,
    seconds_between,
)
from execution_ledger.projections.dataset import DEPTHS, ROWS, TASKS, DatasetProjection
from execution_ledger.projections.event_facts import stored_size
from tests.helpers import start, succeed
from tests.processors.worker_harness import run_nodes_until

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=5)
REGISTRY = build_registry(
    {
        "task_types": {
            "echo": {"adapter": "python", "retry": {"max_attempts": 3}},
            "hello": {"adapter": "shell", "settings": {"argv": ["/bin/echo", "hi"]}},
        }
    }
)


def plan(*requests: TaskRequest) -> list[Task]:
    """Tasks planned as the product plans them (their TaskEnqueued still pending)."""
    ids = (UUID(int=n) for n in count(1))
    context = SubmissionContext(REGISTRY, Requester("alice", "coder"), NOW, lambda: next(ids))
    return plan_tasks(context, list(requests), {})


class Log:
    """Collects the pending events of tasks in the order a test drives them, with positions,
    and folds them."""

    def __init__(self) -> None:
        self.events: list[tuple[int, Any]] = []
        self.fold = AttemptFold()
        self.rows: list[AttemptRow] = []

    def record(self, *tasks: Task) -> None:
        for task in tasks:
            for event in task.collect_events():
                position = len(self.events) + 1
                self.events.append((position, event))
                row = self.fold.apply_event(event, position)
                if row is not None:
                    self.rows.append(row)

    def event(self, name: str, nth: int = 0) -> Any:
        return [e for _, e in self.events if type(e).__name__ == name][nth]


# -- the fold ---------------------------------------------------------------------------


def test_a_successful_attempt_is_one_row_with_times_sizes_node_and_exit_code() -> None:
    [task] = plan(TaskRequest("echo", {"greeting": "héllo"}, lane="agent:7"))
    log = Log()
    log.record(task)
    task.start("node-a", LEASE, NOW)
    log.record(task)
    task.succeed(1, {"answer": 42}, details={"exit_code": 0})
    log.record(task)

    [row] = log.rows
    enqueued = log.event("TaskEnqueued")
    started = log.event("TaskStarted")
    succeeded = log.event("TaskSucceeded")
    assert (row.task_id, row.attempt, row.outcome, row.node) == (task.id, 1, "succeeded", "node-a")
    assert (row.task_type, row.adapter, row.queue) == ("echo", "python", "default")
    assert row.lane == "agent:7"
    assert (row.principal, row.role) == ("alice", "coder")
    assert row.enqueued_at == row.ready_at == enqueued.timestamp
    assert (row.started_at, row.finished_at) == (started.timestamp, succeeded.timestamp)
    assert row.queue_wait_s == seconds_between(enqueued.timestamp, started.timestamp)
    assert row.run_s == seconds_between(started.timestamp, succeeded.timestamp)
    assert row.args_bytes == len('{"greeting":"héllo"}'.encode()) == stored_size(task.args)
    assert row.result_bytes == len(b'{"answer":42}')
    assert (row.exit_code, row.http_status) == (0, None)
    assert (row.error_class, row.timeout_kind) == (None, None)
    assert (row.dependencies, row.dag_depth, row.position) == (0, 0, 3)


def test_a_failure_then_a_retry_give_one_row_per_attempt_the_retry_ready_at_its_retry_time() -> (
    None
):
    [task] = plan(TaskRequest("echo"))
    log = Log()
    log.record(task)
    task.start("node-a", LEASE, NOW)
    task.fail(1, "ExitCode", "exited 2", details={"exit_code": 2, "stderr": "no"})
    retry_at = NOW + timedelta(seconds=3)
    task.schedule_retry(retry_at)
    log.record(task)
    task.start("node-b", LEASE, retry_at)
    task.succeed(2, None, details={"http_status": 200})
    log.record(task)

    first, second = log.rows
    assert (first.attempt, first.outcome, first.error_class, first.exit_code) == (
        1,
        "failed",
        "ExitCode",
        2,
    )
    assert first.result_bytes is None and first.node == "node-a"
    assert (second.attempt, second.outcome, second.node) == (2, "succeeded", "node-b")
    assert second.ready_at == retry_at
    assert second.enqueued_at == first.enqueued_at
    assert (second.result_bytes, second.http_status, second.exit_code) == (4, 200, None)


def test_a_timed_out_attempt_is_a_row_with_its_kind_and_a_timeout_before_any_start_is_none() -> (
    None
):
    running, waiting = plan(TaskRequest("echo", ref="a"), TaskRequest("echo", ref="b"))
    log = Log()
    log.record(running, waiting)
    running.start("node-a", LEASE, NOW)
    running.time_out(TimeoutKind.HEARTBEAT)
    waiting.time_out(TimeoutKind.SCHEDULE_TO_START)
    log.record(running, waiting)

    [row] = log.rows
    assert (row.task_id, row.outcome, row.error_class, row.timeout_kind) == (
        running.id,
        "timed_out",
        "Timeout",
        "heartbeat",
    )
    assert row.result_bytes is None


def test_a_cancel_while_running_ends_the_attempt_and_a_cancel_while_waiting_gives_no_row() -> None:
    running, waiting = plan(TaskRequest("echo", ref="a"), TaskRequest("echo", ref="b"))
    log = Log()
    log.record(running, waiting)
    running.start("node-a", LEASE, NOW)
    running.cancel(by="alice")
    waiting.cancel(by="alice")
    log.record(running, waiting)

    [row] = log.rows
    assert (row.task_id, row.outcome, row.error_class) == (running.id, "cancelled", "Cancelled")


def test_a_manual_retry_after_a_cancel_numbers_the_next_attempt_on() -> None:
    [task] = plan(TaskRequest("echo"))
    log = Log()
    log.record(task)
    task.start("node-a", LEASE, NOW)
    task.cancel(by="alice")
    task.retry_manually(NOW, by="alice")
    task.start("node-a", LEASE, NOW)
    task.succeed(2, "done")
    log.record(task)

    assert [(r.attempt, r.outcome) for r in log.rows] == [(1, "cancelled"), (2, "succeeded")]


def test_dependencies_give_counts_depths_and_ready_at_the_unblock_and_skipped_tasks_no_row() -> (
    None
):
    root, middle, leaf, doomed = plan(
        TaskRequest("echo", ref="root"),
        TaskRequest("echo", ref="middle", depends_on=("root",)),
        TaskRequest("echo", ref="leaf", depends_on=("root", "middle")),
        TaskRequest("echo", ref="doomed", depends_on=("leaf",)),
    )
    log = Log()
    log.record(root, middle, leaf, doomed)
    for task in (root, middle, leaf):
        if task is not root:
            task.unblock(NOW)
        task.start("node-a", LEASE, NOW)
        if task is leaf:
            task.fail(1, "Boom", "no", retryable=False)
        else:
            task.succeed(1, 1)
        log.record(task)
    doomed.skip("dependency failed", leaf.id)
    log.record(doomed)

    rows = {r.task_id: r for r in log.rows}
    assert set(rows) == {root.id, middle.id, leaf.id}
    assert [(rows[t.id].dependencies, rows[t.id].dag_depth) for t in (root, middle, leaf)] == [
        (0, 0),
        (1, 1),
        (2, 2),
    ]
    assert rows[middle.id].ready_at == log.event("TaskUnblocked", 0).timestamp
    assert rows[leaf.id].ready_at == log.event("TaskUnblocked", 1).timestamp


def test_a_scheduled_task_is_ready_at_its_run_at() -> None:
    run_at = NOW + timedelta(minutes=1)
    [task] = plan(TaskRequest("echo", run_at=run_at))
    log = Log()
    log.record(task)
    task.start("node-a", LEASE, run_at)
    task.succeed(1, {})
    log.record(task)

    [row] = log.rows
    assert row.ready_at == run_at
    assert row.queue_wait_s == seconds_between(run_at, row.started_at)


def test_the_fold_forgets_a_succeeded_task_but_keeps_its_depth() -> None:
    root, child = plan(
        TaskRequest("echo", ref="r"), TaskRequest("echo", ref="c", depends_on=("r",))
    )
    log = Log()
    log.record(root, child)
    root.start("n", LEASE, NOW)
    root.succeed(1, 1)
    child.unblock(NOW)
    child.start("n", LEASE, NOW)
    child.succeed(1, 1)
    log.record(root, child)

    state = log.fold.state
    assert state.facts == {}  # type: ignore[attr-defined]
    assert state.depths == {child.id: 1}  # type: ignore[attr-defined]


# -- the live projection ----------------------------------------------------------------


def dataset_runner(runtime: Runtime, batch_size: int = 500) -> ProjectionRunner:
    """The dataset projection's runner (its tables created), as the runtime will wire it."""
    projection = DatasetProjection(runtime.settings.schema)
    with runtime.store.transaction() as cursor:
        projection.create(cursor)
    return ProjectionRunner(runtime.store, projection, batch_size=batch_size)


def table_rows(runtime: Runtime) -> list[AttemptRow]:
    query = sql.SQL("SELECT {} FROM {} ORDER BY position").format(
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
        sql.Identifier(runtime.settings.schema, ROWS),
    )
    with runtime.store.transaction() as cursor:
        cursor.execute("SET LOCAL TimeZone TO 'Europe/Paris'")  # any zone: rows are instants
        return [AttemptRow(**row) for row in cursor.execute(query).fetchall()]


def replayed_rows(runtime: Runtime) -> list[AttemptRow]:
    return [row for page in Replay(runtime.store).pages() for row in page]


def fail_then_retry_at_once(runtime: Runtime, task_id: UUID) -> None:
    attempt = start(runtime.store, task_id)
    task = runtime.store.load(task_id)
    task.fail(attempt, "RuntimeError", "boom", details={"exit_code": 3})
    task.schedule_retry(datetime.now(UTC))
    runtime.store.save(task)


def test_the_projection_holds_the_rows_a_replay_of_the_log_gives(runtime: Runtime) -> None:
    ledger = runtime.ledger
    tasks = ledger.enqueue_graph(
        [
            TaskRequest("add", {"a": 1, "b": 2}, ref="sum"),
            TaskRequest("echo", {"n": "ü"}, ref="after", depends_on=("sum",)),
            TaskRequest("fail", ref="bad"),
            TaskRequest("echo", ref="never", depends_on=("bad",)),
        ]
    )
    refs = {task.ref: task.id for task in tasks}
    runner = dataset_runner(runtime, batch_size=2)  # state crosses many batches
    succeed(runtime.store, refs["sum"], {"sum": 3})
    runtime.catch_up()
    runner.catch_up()
    succeed(runtime.store, refs["after"])
    fail_then_retry_at_once(runtime, refs["bad"])
    runner.catch_up()
    succeed(runtime.store, refs["bad"])  # attempt 2 after the retry
    runtime.catch_up()
    runner.catch_up()

    rows = table_rows(runtime)
    assert [(r.task_type, r.attempt, r.outcome) for r in rows] == [
        ("add", 1, "succeeded"),
        ("echo", 1, "succeeded"),
        ("fail", 1, "failed"),
        ("fail", 2, "succeeded"),
    ]
    assert rows[1].dag_depth == 1 and rows[1].dependencies == 1
    assert rows == replayed_rows(runtime)
    assert runner.rebuild() == runtime.store.head_position()
    assert table_rows(runtime) == rows


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


def test_a_batch_is_written_in_a_few_statements_whatever_its_size(runtime: Runtime) -> None:
    ledger = runtime.ledger
    first = ledger.enqueue_graph([TaskRequest("echo", ref=f"t{n}") for n in range(30)])
    second = ledger.enqueue_graph(
        [TaskRequest("echo", ref="after", depends_on=tuple(str(t.id) for t in first[:3]))]
    )
    for task in first[:20]:
        succeed(runtime.store, task.id)
    fail_then_retry_at_once(runtime, first[20].id)  # its facts stay, attempt 2 to come
    runtime.catch_up()
    events = [(r.event, r.position) for r in runtime.store.read(0, 10_000)]

    schema = runtime.settings.schema
    projection = DatasetProjection(schema)
    with runtime.store.transaction() as cursor:
        projection.create(cursor)
        for table in (ROWS, TASKS, DEPTHS):  # empty, as for a rebuild
            cursor.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(schema, table)))
        counting = CountingCursor(cursor)
        assert projection.apply_batch(counting, events) == []
    # Loads (2), facts upserted and deleted, depths inserted, rows inserted.
    assert counting.statements <= 6
    assert table_rows(runtime) == replayed_rows(runtime)
    fold = AttemptFold()
    for event, position in events:
        fold.apply_event(event, position)
    with runtime.store.transaction() as cursor:
        kept = cursor.execute(
            sql.SQL("SELECT task_id, attempt FROM {}").format(sql.Identifier(schema, TASKS))
        ).fetchall()
        depths = cursor.execute(
            sql.SQL("SELECT task_id, depth FROM {}").format(sql.Identifier(schema, DEPTHS))
        ).fetchall()
    memory = fold.state
    assert {r["task_id"]: r["attempt"] for r in kept} == {
        task_id: facts.attempt
        for task_id, facts in memory.facts.items()  # type: ignore[attr-defined]
    }
    assert {r["task_id"]: r["depth"] for r in depths} == {second[0].id: 1}


def test_another_runner_continues_from_the_tables_where_the_first_stopped(
    runtime: Runtime,
) -> None:
    tasks = runtime.ledger.enqueue_graph(
        [
            TaskRequest("echo", ref="a"),
            TaskRequest("echo", ref="b", depends_on=("a",)),
            TaskRequest("echo", ref="c", depends_on=("b",)),
        ]
    )
    first = dataset_runner(runtime, batch_size=1)
    for task in tasks:
        runtime.catch_up()
        succeed(runtime.store, task.id)
        first.run_batch()  # stops part way through the log
    second = dataset_runner(runtime)  # a new process: nothing in memory
    second.catch_up()
    rows = table_rows(runtime)
    assert [r.dag_depth for r in rows] == [0, 1, 2]
    assert rows == replayed_rows(runtime)


def test_a_real_worker_running_a_small_dag_gives_the_same_rows_live_and_replayed(
    runtime: Runtime, tmp_path: Path
) -> None:
    tasks = runtime.ledger.enqueue_graph(
        [
            TaskRequest("hello", {"name": "ada"}, ref="greet"),
            TaskRequest("square", {"n": 7}, ref="square"),
            TaskRequest("add", {"a": 1, "b": 2}, ref="sum", depends_on=("greet", "square")),
            TaskRequest("fail", ref="bad"),
        ]
    )
    ids = [task.id for task in tasks]

    def all_over() -> bool:
        states = [runtime.store.load(i) for i in ids]
        return all(
            t.state.is_terminal and (t.type_name != "fail" or t.attempts == 2) for t in states
        )

    run_nodes_until(runtime, all_over, timeout=20)
    runner = dataset_runner(runtime)
    runner.catch_up()

    rows = table_rows(runtime)
    by_type: dict[str, list[AttemptRow]] = {}
    for row in rows:
        by_type.setdefault(row.task_type, []).append(row)
    assert by_type["hello"][0].adapter == "shell" and by_type["hello"][0].exit_code == 0
    assert by_type["square"][0].adapter == "lua"
    assert by_type["add"][0].dag_depth == 1 and by_type["add"][0].dependencies == 2
    assert [r.outcome for r in by_type["fail"]] == ["failed", "failed"]
    assert all(r.node and r.run_s >= 0 and r.queue_wait_s is not None for r in rows)
    assert rows == replayed_rows(runtime)
