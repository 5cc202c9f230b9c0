"""The benchmark's bulk history (``bulk_history.py``) is what the normal path would have
left: copies of real tasks whose log verifies, whose read models are what the projections
make of it, and whose tasks load through the store, each with its own ids and times."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql

from execution_ledger.adapters.postgres.audit import verify_chain
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.task import TaskState
from tests.bench import bulk_history
from tests.bench.bench_retention import build_old

COPIES = 3
READ_MODELS = [
    "task_view",
    "readiness_nodes",
    "readiness_edges",
    "attempt_dataset",
    "attempt_dataset_tasks",
    "attempt_dataset_depths",
    "dispatch_queue",
]


@pytest.fixture
def template(runtime: Runtime) -> Runtime:
    """About 60 events of ended tasks (two of them failed once and were retried)."""
    build_old(runtime, 60)
    runtime.catch_up()
    return runtime


@pytest.fixture
def target(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    name = f"test_{uuid4().hex[:16]}"
    monkeypatch.setenv("LEDGER_SCHEMA", name)
    runtime = open_runtime(pool_size=2)
    yield runtime
    runtime.close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def copied(template: Runtime, target: Runtime) -> bulk_history.BulkReport:
    plan = bulk_history.BulkPlan(
        template.settings.schema, target.settings.schema, COPIES, timedelta(days=3)
    )
    return bulk_history.copy_history(target.database_url, plan)


def originators(runtime: Runtime) -> list[UUID]:
    with psycopg.connect(runtime.database_url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT DISTINCT originator_id FROM {}").format(
                sql.Identifier(runtime.settings.schema, "ledger_events")
            )
        ).fetchall()
    return [r[0] for r in rows]


def test_the_copied_log_verifies_and_projects_to_the_copied_read_models(
    template: Runtime, target: Runtime
) -> None:
    report = copied(template, target)
    size = template.store.head_position()

    assert report.events == COPIES * size
    assert target.store.head_position() == COPIES * size
    chain = verify_chain(target.store)
    assert chain.ok, chain.detail
    assert bulk_history.check_rebuild(target, READ_MODELS) == dict.fromkeys(READ_MODELS, 0)


def test_each_copy_has_its_own_ids_and_times_and_loads_through_the_store(
    template: Runtime, target: Runtime
) -> None:
    copied(template, target)
    tasks = originators(template)
    copies = originators(target)

    assert len(copies) == COPIES * len(tasks)
    assert not set(copies) & set(tasks)
    original = template.store.load(tasks[0])
    step = timedelta(days=3) / COPIES
    for copy in range(COPIES):
        task = target.store.load(bulk_history.renamed(tasks[0], copy))
        assert task.state is TaskState.SUCCEEDED
        assert task.version == original.version
        assert task.created_on == original.created_on - step * (COPIES - copy)
        assert task.created_on < datetime.now(UTC)


def test_a_copied_state_renames_ids_and_moves_times_and_keeps_every_other_byte() -> None:
    graph, when = uuid4(), datetime(2026, 12, 3, 20, 15, 9, 761604, tzinfo=UTC)
    state = (
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"' + when.isoformat().encode() + b'"},'
        b'"args":{"i":0},"graph_id":{"_type_":"uuid_hex","_data_":"' + graph.hex.encode() + b'"}}'
    )
    pieces, values = bulk_history.split_state(state)
    event = bulk_history.TemplateEvent(
        1, uuid4(), 1, "domain.task:Task.TaskEnqueued", pieces, values
    )

    assert bulk_history.copied_state(event, 0, timedelta(0)) == state.replace(
        graph.hex.encode(), bulk_history.renamed(graph, 0).hex.encode()
    )
    moved = bulk_history.copied_state(event, 2, timedelta(hours=1, microseconds=761604))
    assert moved == (
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-03T19:15:09+00:00"},'
        b'"args":{"i":0},"graph_id":{"_type_":"uuid_hex","_data_":"'
        + bulk_history.renamed(graph, 2).hex.encode()
        + b'"}}'
    )
