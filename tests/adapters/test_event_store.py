"""The event store on a real PostgreSQL: atomic saves, optimistic concurrency, history."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from execution_ledger.adapters.postgres.event_store import LAST_POSITION
from execution_ledger.adapters.postgres.log_horizon import HORIZON_SETTING
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import TaskNotFound, UnknownTaskType
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from tests.helpers import now


def test_a_dag_is_stored_all_or_nothing_when_one_task_cannot_be_saved(runtime: Runtime) -> None:
    existing = runtime.ledger.enqueue(TaskRequest("echo", {"n": 0}))
    head = runtime.store.head_position()
    ids = iter([uuid4(), uuid4(), existing.id])  # the third collides with a stored task
    runtime.ledger.new_id = lambda: next(ids)
    with pytest.raises(IntegrityError):
        runtime.ledger.enqueue_graph([TaskRequest("echo", {"n": i}, ref=f"t{i}") for i in range(2)])
    assert runtime.store.head_position() == head


def test_a_refused_graph_stores_nothing(runtime: Runtime) -> None:
    head = runtime.store.head_position()
    with pytest.raises(UnknownTaskType):
        runtime.ledger.enqueue_graph(
            [TaskRequest("echo", ref="a"), TaskRequest("no-such-type", ref="b", depends_on=("a",))]
        )
    assert runtime.store.head_position() == head


def test_two_writers_appending_the_same_version_exactly_one_wins(runtime: Runtime) -> None:
    task_id = runtime.ledger.enqueue(TaskRequest("echo")).id
    copies = [runtime.store.load(task_id) for _ in range(2)]
    for index, copy in enumerate(copies):
        copy.start(f"worker-{index}", now(), now())
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def save(task: object) -> None:
        barrier.wait()
        try:
            runtime.store.save(task)  # type: ignore[arg-type]
            outcomes.append("saved")
        except IntegrityError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=save, args=(c,)) for c in copies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict", "saved"]
    stored = runtime.store.load(task_id)
    assert stored.state is TaskState.RUNNING and stored.attempts == 1
    starts = [e for e in runtime.store.history(task_id) if type(e.event).__name__ == "TaskStarted"]
    assert len(starts) == 1


def test_history_lists_a_tasks_events_in_order_with_increasing_positions(runtime: Runtime) -> None:
    task = runtime.ledger.enqueue(TaskRequest("echo"))
    runtime.ledger.cancel(task.id, by="alice", reason="not needed")
    history = runtime.ledger.history(task.id)
    assert [type(e.event).__name__ for e in history] == ["TaskEnqueued", "TaskCancelled"]
    assert history[0].position < history[1].position
    assert history[1].event.by == "alice"  # type: ignore[attr-defined]


def test_loading_an_unknown_task_says_so(runtime: Runtime) -> None:
    missing = UUID(int=7)
    with pytest.raises(TaskNotFound, match=str(missing)):
        runtime.ledger.task(missing)
    with pytest.raises(TaskNotFound):
        runtime.ledger.history(missing)


def test_depending_on_an_unknown_task_id_is_refused_and_changes_nothing(runtime: Runtime) -> None:
    from execution_ledger.domain.errors import UnknownDependency

    head = runtime.store.head_position()
    with pytest.raises(UnknownDependency, match="no task"):
        runtime.ledger.enqueue(TaskRequest("echo", depends_on=(str(uuid4()),)))
    assert runtime.store.head_position() == head


def test_a_reopened_store_reads_what_another_one_wrote(runtime: Runtime) -> None:
    from execution_ledger.adapters.postgres.event_store import EventStore

    task = runtime.ledger.enqueue(TaskRequest("add", {"a": 1, "b": 2}))
    other = EventStore(runtime.database_url, runtime.settings.schema, pool_size=1)
    try:
        loaded = other.load(task.id)
    finally:
        other.close()
    assert loaded.args == {"a": 1, "b": 2}
    assert loaded.state is TaskState.READY


def test_a_dag_of_thousands_of_tasks_is_stored_in_one_transaction(runtime: Runtime) -> None:
    requests = [TaskRequest("echo", {"i": 0}, ref="t0")] + [
        TaskRequest("echo", {"i": i}, ref=f"t{i}", depends_on=("t0",)) for i in range(1, 2000)
    ]
    head = runtime.store.head_position()
    tasks = runtime.ledger.enqueue_graph(requests)
    assert runtime.store.head_position() == head + 2000
    assert len({t.graph_id for t in tasks}) == 1
    runtime.catch_up()
    from tests.helpers import succeed

    succeed(runtime.store, tasks[0].id)
    runtime.catch_up()
    assert runtime.store.load(tasks[-1].id).state is TaskState.READY


@pytest.mark.parametrize("tasks", [1, 100, 300])  # both insert statements (<= 256 and above)
def test_append_in_returns_each_events_position_in_the_order_saved(
    runtime: Runtime, tasks: int
) -> None:
    planned = [TaskRequest("echo", {"i": i}) for i in range(tasks)]
    saved = runtime.ledger.enqueue_graph(planned)
    with runtime.store.transaction() as cur:
        for task in saved:
            task.cancel(by="test")
        recorded = runtime.store.append_in(cur, saved)
    positions = [r.position for r in recorded]
    assert positions == sorted(positions)
    assert [r.event.originator_id for r in recorded] == [t.id for t in saved]
    stored = {
        r.event.originator_id: r.position
        for r in runtime.store.read(0, 10_000)
        if type(r.event).__name__ == "TaskCancelled"
    }
    assert stored == {r.event.originator_id: r.position for r in recorded}
    # The stored bytes decode back to the same events.
    assert all(runtime.store.load(t.id).state.value == "cancelled" for t in saved[:5])


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for p in plan.get("Plans", []) for n in _plan_nodes(p))]


def test_reading_the_log_walks_the_index_in_order_and_stops_at_the_horizon(
    runtime: Runtime,
) -> None:
    # A burst fills the log before ANALYZE has seen it (a new schema here): the read must
    # still take the first rows in index order, not gather the whole backlog through a
    # bitmap and sort it for each batch of a catch-up; and where a slow writer holds the
    # horizon back, it must stop there, not walk the rows committed beyond it.
    runtime.ledger.enqueue_graph([TaskRequest("echo", {"n": i}) for i in range(3000)])
    store = runtime.store
    with store.recorder.datastore.get_connection() as conn:
        conn.execute(store._sql_note_horizon)
        explained = conn.execute(
            "EXPLAIN (FORMAT JSON) " + store._sql_read, (100, LAST_POSITION, 500)
        ).fetchone()
        nodes = [n["Node Type"] for n in _plan_nodes(explained["QUERY PLAN"][0]["Plan"])]  # type: ignore[index]
        assert "Index Scan" in nodes and "Sort" not in nodes, nodes
        conn.execute(  # as if a writer still held position 301
            "SELECT set_config(%s, '300', false)", (HORIZON_SETTING,)
        )
        explained = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + store._sql_read, (100, LAST_POSITION, 500)
        ).fetchone()
    scan = next(
        n
        for n in _plan_nodes(explained["QUERY PLAN"][0]["Plan"])  # type: ignore[index]
        if n["Node Type"] == "Index Scan"
    )
    assert scan["Actual Rows"] == 200 and scan.get("Rows Removed by Filter", 0) == 0, scan
    assert [e.position for e in store.read(100, 500)] == list(range(101, 601))
