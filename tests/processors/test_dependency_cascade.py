"""The readiness graph and the dependency cascade on a real PostgreSQL."""

from __future__ import annotations

from uuid import UUID

import pytest

from execution_ledger.adapters.postgres.task_queries import ready_tasks
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from tests.helpers import fail, succeed
from tests.projections.test_task_view import dump


def state(runtime: Runtime, task_id: UUID) -> TaskState:
    return runtime.store.load(task_id).state


def diamond(runtime: Runtime) -> dict[str, UUID]:
    tasks = runtime.ledger.enqueue_graph(
        [
            TaskRequest("echo", ref="top"),
            TaskRequest("echo", ref="left", depends_on=("top",)),
            TaskRequest("echo", ref="right", depends_on=("top",)),
            TaskRequest("echo", ref="bottom", depends_on=("left", "right")),
        ]
    )
    runtime.catch_up()
    return {t.ref: t.id for t in tasks if t.ref}


def count_events(runtime: Runtime, task_id: UUID, name: str) -> int:
    return sum(type(e.event).__name__ == name for e in runtime.store.history(task_id))


def test_a_task_becomes_ready_only_when_all_its_dependencies_succeeded(runtime: Runtime) -> None:
    ids = diamond(runtime)
    assert [r["task_id"] for r in ready_tasks(runtime.store, "default")] == [ids["top"]]
    succeed(runtime.store, ids["top"])
    runtime.catch_up()
    assert state(runtime, ids["left"]) is state(runtime, ids["right"]) is TaskState.READY
    succeed(runtime.store, ids["left"])
    runtime.catch_up()
    assert state(runtime, ids["bottom"]) is TaskState.BLOCKED
    succeed(runtime.store, ids["right"])
    runtime.catch_up()
    assert state(runtime, ids["bottom"]) is TaskState.READY
    assert count_events(runtime, ids["bottom"], "TaskUnblocked") == 1


def test_pending_counts_and_depths_are_kept_per_node(runtime: Runtime) -> None:
    ids = diamond(runtime)
    succeed(runtime.store, ids["top"])
    runtime.catch_up()
    succeed(runtime.store, ids["left"])
    runtime.catch_up()
    nodes = {r["task_id"]: r for r in dump(runtime, "readiness_nodes", "task_id")}
    assert nodes[ids["bottom"]]["pending"] == 1
    assert [nodes[ids[n]]["depth"] for n in ("top", "left", "bottom")] == [0, 1, 2]
    edges = dump(runtime, "readiness_edges", "parent, child")
    assert len(edges) == 4


def test_a_failed_dependency_skips_its_dependents_transitively(runtime: Runtime) -> None:
    ids = diamond(runtime)
    fail(runtime.store, ids["top"])
    runtime.catch_up()
    for name in ("left", "right", "bottom"):
        assert state(runtime, ids[name]) is TaskState.SKIPPED, name
    assert count_events(runtime, ids["bottom"], "TaskSkipped") == 1


def test_a_failure_followed_by_a_retry_skips_nothing(runtime: Runtime) -> None:
    ids = diamond(runtime)
    fail(runtime.store, ids["top"], retry=True)
    runtime.catch_up()
    assert state(runtime, ids["top"]) is TaskState.SCHEDULED
    assert state(runtime, ids["left"]) is TaskState.BLOCKED


def test_a_cancelled_dependency_skips_its_dependents(runtime: Runtime) -> None:
    ids = diamond(runtime)
    runtime.ledger.cancel(ids["top"])
    runtime.catch_up()
    assert state(runtime, ids["left"]) is TaskState.SKIPPED


def test_depending_on_a_task_that_already_succeeded_is_ready_at_once(runtime: Runtime) -> None:
    first = runtime.ledger.enqueue(TaskRequest("echo"))
    succeed(runtime.store, first.id)
    later = runtime.ledger.enqueue(TaskRequest("echo", depends_on=(str(first.id),)))
    assert later.state is TaskState.READY


def test_depending_on_a_task_that_already_failed_is_skipped(runtime: Runtime) -> None:
    first = runtime.ledger.enqueue(TaskRequest("echo"))
    fail(runtime.store, first.id)
    runtime.catch_up()
    later = runtime.ledger.enqueue(TaskRequest("echo", depends_on=(str(first.id),)))
    runtime.catch_up()
    assert state(runtime, later.id) is TaskState.SKIPPED


def test_a_dependency_finishing_while_its_dependent_is_enqueued_still_releases_it(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The enqueue saw the dependency running (so: blocked), but the success was projected
    before the dependent's enqueue: the graph releases it when it reads the enqueue."""
    first = runtime.ledger.enqueue(TaskRequest("echo"))
    runtime.catch_up()
    later_request = TaskRequest("echo", depends_on=(str(first.id),))
    stale_states = {first.id: TaskState.RUNNING}
    monkeypatch.setattr(
        "execution_ledger.adapters.ledger.stored_states", lambda requests, load: stale_states
    )
    succeed(runtime.store, first.id)
    runtime.catch_up()
    later = runtime.ledger.enqueue(later_request)
    assert later.state is TaskState.BLOCKED
    runtime.catch_up()
    assert state(runtime, later.id) is TaskState.READY


def test_rebuilding_the_readiness_graph_gives_identical_tables_and_appends_nothing(
    runtime: Runtime,
) -> None:
    ids = diamond(runtime)
    succeed(runtime.store, ids["top"])
    runtime.catch_up()
    succeed(runtime.store, ids["left"])
    fail(runtime.store, ids["right"])
    runtime.catch_up()
    other = diamond(runtime)
    runtime.ledger.cancel(other["top"])
    runtime.catch_up()
    head = runtime.store.head_position()
    before = (
        dump(runtime, "readiness_nodes", "task_id"),
        dump(runtime, "readiness_edges", "parent, child"),
    )
    runtime.runners["readiness"].rebuild()
    after = (
        dump(runtime, "readiness_nodes", "task_id"),
        dump(runtime, "readiness_edges", "parent, child"),
    )
    assert after == before
    assert runtime.store.head_position() == head


def test_a_long_chain_releases_one_hop_per_success(runtime: Runtime) -> None:
    requests = [TaskRequest("echo", ref="t0")] + [
        TaskRequest("echo", ref=f"t{i}", depends_on=(f"t{i - 1}",)) for i in range(1, 30)
    ]
    tasks = runtime.ledger.enqueue_graph(requests)
    runtime.catch_up()
    for task in tasks:
        assert state(runtime, task.id) is TaskState.READY
        succeed(runtime.store, task.id)
        runtime.catch_up()
    assert all(state(runtime, t.id) is TaskState.SUCCEEDED for t in tasks)
