"""Promises of docs/worker.md that only a running worker (or its dispatch) shows, on a real
PostgreSQL: a type or adapter the worker does not know fails ``NotConfigured`` and is not
retried; the watchdog's ``start_to_close`` backstop times out an attempt its worker never
ends; an outcome that keeps conflicting is dropped after its bound, the others of its round
recorded one by one, and the dropped attempt then times out on its heartbeat; a claim that
keeps conflicting claims nothing after the same bound, and the task later."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from psycopg import sql

from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.postgres.dispatch import PostgresDispatch
from execution_ledger.adapters.postgres.timeouts import BACKSTOP_GRACE_SECONDS, PostgresTimeouts
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.execution import AttemptOutcome, Success
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from execution_ledger.domain.timeouts import TimeoutOverrides
from tests.processors.worker_harness import (
    run_built_nodes_until,
    run_nodes_until,
    runtime_with_config,
    wait_until,
)

TYPES = textwrap.dedent(
    """
    [task_types.square]
    adapter = "lua"
    settings = { script = "return args.n * args.n" }
    retry = { max_attempts = 3, backoff_initial = "50ms", backoff_max = "50ms" }

    [task_types.stubborn]
    adapter = "python"
    settings = { callable = "tests.processors.test_worker_promises:ignores_first_cancel" }
    timeouts = { start_to_close = "1s" }
    retry = { max_attempts = 1 }
    """
)
MYSTERY = textwrap.dedent(
    """
    [task_types.mystery]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
    retry = { max_attempts = 3, backoff_initial = "50ms", backoff_max = "50ms" }
    """
)


async def ignores_first_cancel(args: dict[str, Any]) -> dict[str, Any]:
    """An adapter call that swallows the worker's own ``start_to_close`` cancellation and
    goes on; only a second cancellation (the watchdog's cancel notice) stops it."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)
    await asyncio.sleep(3600)
    return {"finished": True}


@pytest.fixture
def rt(ledger_env: None, tmp_path: Path) -> Iterator[Runtime]:
    runtime = runtime_with_config(tmp_path, TYPES + MYSTERY)
    yield runtime
    runtime.close()


def names(rt: Runtime, task_id: UUID) -> list[str]:
    return [type(e.event).__name__ for e in rt.store.history(task_id)]


def ended(rt: Runtime, task_id: UUID) -> bool:
    return rt.store.load(task_id).state.is_terminal


# -- 1. NotConfigured -------------------------------------------------------------------


def test_a_task_type_the_worker_does_not_know_fails_not_configured_and_is_not_retried(
    rt: Runtime, tmp_path: Path
) -> None:
    task = rt.ledger.enqueue(TaskRequest("mystery", {"x": 1}))
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    node_runtime = runtime_with_config(other_dir, TYPES)  # same ledger, no "mystery" type
    try:
        run_nodes_until(node_runtime, lambda: ended(rt, task.id))
    finally:
        node_runtime.close()
    failed = rt.store.load(task.id)
    assert (failed.state, failed.attempts) == (TaskState.FAILED, 1)
    assert failed.error["class"] == "NotConfigured"
    assert "type 'mystery'" in failed.error["message"]
    assert names(rt, task.id) == ["TaskEnqueued", "TaskStarted", "TaskFailed"]


def test_an_adapter_the_worker_does_not_have_fails_not_configured_and_is_not_retried(
    rt: Runtime,
) -> None:
    task = rt.ledger.enqueue(TaskRequest("square", {"n": 3}))

    def node_without_lua() -> list[WorkerNode]:
        node = WorkerNode(rt)
        node.worker.executors = {n: e for n, e in node.worker.executors.items() if n != "lua"}
        return [node]

    run_built_nodes_until(node_without_lua, lambda: ended(rt, task.id))
    failed = rt.store.load(task.id)
    assert (failed.state, failed.attempts) == (TaskState.FAILED, 1)
    assert failed.error["class"] == "NotConfigured"
    assert "adapter 'lua'" in failed.error["message"]
    assert "TaskRetryScheduled" not in names(rt, task.id)


# -- 2. the start_to_close backstop -----------------------------------------------------


def test_the_watchdog_times_out_an_attempt_its_worker_never_ends_after_the_grace(
    rt: Runtime,
) -> None:
    task = rt.ledger.enqueue(TaskRequest("stubborn"))
    run_nodes_until(rt, lambda: ended(rt, task.id), timeout=30)
    history = [e.event for e in rt.store.history(task.id)]
    assert [type(e).__name__ for e in history] == ["TaskEnqueued", "TaskStarted", "TaskTimedOut"]
    started, timed_out = history[1], history[2]
    assert (timed_out.kind, timed_out.attempt) == ("start_to_close", 1)
    # Recorded by the watchdog, past close_deadline + grace: not by the worker's own timer
    # (which the adapter ignored), and not earlier than the grace allows.
    waited = (timed_out.timestamp - started.timestamp).total_seconds()
    assert waited >= 1.0 + BACKSTOP_GRACE_SECONDS
    failed = rt.store.load(task.id)
    assert (failed.state, failed.timeout_kind, failed.result) == (
        TaskState.FAILED,
        "start_to_close",
        None,
    )


# -- 4. an outcome that keeps conflicting -----------------------------------------------


def _refuse_first_success_of(rt: Runtime, task_id: UUID) -> None:
    """A trigger that refuses, as a version conflict (unique_violation), the insert of the
    first attempt's ``TaskSucceeded`` of one task; each refusal counts in a sequence."""
    _refuse(rt, task_id, "TaskSucceeded", version=3)


def _refuse(rt: Runtime, task_id: UUID, event: str, version: int) -> None:
    """A trigger that refuses, as a version conflict (unique_violation), the insert of
    ``task_id``'s ``event`` at ``version``; each refusal counts in a sequence."""
    schema = sql.Identifier(rt.store.schema)
    with rt.store.transaction() as cur:
        cur.execute(sql.SQL("CREATE SEQUENCE {}.refusals").format(schema))
        cur.execute(
            sql.SQL(
                "CREATE FUNCTION {schema}.refuse_success() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.originator_id = {task} AND NEW.topic LIKE {topic} "
                "AND NEW.originator_version = {version} THEN "
                "PERFORM nextval('{seq}'); "
                "RAISE EXCEPTION 'refused' USING ERRCODE = 'unique_violation'; "
                "END IF; RETURN NEW; END $$"
            ).format(
                schema=schema,
                task=sql.Literal(str(task_id)),
                topic=sql.Literal(f"%{event}"),
                version=sql.Literal(version),
                seq=sql.SQL(f"{rt.store.schema}.refusals"),
            )
        )
        cur.execute(
            sql.SQL(
                "CREATE TRIGGER refuse_success BEFORE INSERT ON {events} "
                "FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_success()"
            ).format(events=rt.store.table, schema=schema)
        )


def _refusals(rt: Runtime) -> int:
    with rt.store.transaction() as cur:
        cur.execute(
            sql.SQL("SELECT last_value, is_called FROM {}.refusals").format(
                sql.Identifier(rt.store.schema)
            )
        )
        row = cur.fetchone()
    assert row is not None
    return int(row["last_value"]) if row["is_called"] else 0


def test_a_claim_that_keeps_conflicting_claims_nothing_this_round_and_the_task_later(
    rt: Runtime,
) -> None:
    task = rt.ledger.enqueue(TaskRequest("mystery", {"i": 1}))
    _refuse(rt, task.id, "TaskStarted", version=2)
    dispatch = PostgresDispatch(rt.store, rt.settings.config.registry, clock=utc_now)
    assert dispatch.claim(["default"], 1, "w1") == []
    assert _refusals(rt) == 5  # the one bound of concurrent_write.retry_on_conflict
    assert rt.store.load(task.id).state is TaskState.READY
    with rt.store.transaction() as cur:
        cur.execute(sql.SQL("DROP TRIGGER refuse_success ON {}").format(rt.store.table))
    [claimed] = dispatch.claim(["default"], 1, "w1")
    assert (claimed.task_id, claimed.attempt) == (task.id, 1)


def test_an_outcome_that_keeps_conflicting_is_dropped_after_five_tries_the_others_recorded(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    quick = TimeoutOverrides(heartbeat=1.0)
    poisoned = rt.ledger.enqueue(TaskRequest("mystery", {"i": 1}, timeouts=quick))
    fine = rt.ledger.enqueue(TaskRequest("mystery", {"i": 2}, timeouts=quick))
    dispatch = PostgresDispatch(rt.store, rt.settings.config.registry, clock=utc_now)
    assert len(dispatch.claim(["default"], 2, "w1")) == 2
    _refuse_first_success_of(rt, poisoned.id)
    outcomes = [
        AttemptOutcome(poisoned.id, 1, Success({"i": 1})),
        AttemptOutcome(fine.id, 1, Success({"i": 2})),
    ]
    with caplog.at_level(logging.WARNING, logger="execution_ledger.adapters.postgres.dispatch"):
        dispatch.claim(["default"], 0, "w1", outcomes=outcomes)
    # The round conflicted once; then each outcome on its own: the fine one recorded, the
    # poisoned one tried 5 times and dropped with a warning.
    assert _refusals(rt) == 1 + 5
    recorded = rt.store.load(fine.id)
    assert (recorded.state, recorded.attempts, recorded.result) == (
        TaskState.SUCCEEDED,
        1,
        {"i": 2},
    )
    assert rt.store.load(poisoned.id).state is TaskState.RUNNING
    warnings = [r.getMessage() for r in caplog.records if "kept conflicting" in r.getMessage()]
    assert len(warnings) == 1 and str(poisoned.id) in warnings[0]
    # Its lease is not renewed: the watchdog times the attempt out and the policy retries it.
    watchdog = PostgresTimeouts(rt.store, clock=utc_now)
    wait_until(lambda: watchdog.record(watchdog.fired()) > 0, what="the heartbeat timeout")
    assert rt.store.load(poisoned.id).state is TaskState.SCHEDULED
    history = [e.event for e in rt.store.history(poisoned.id)]
    assert [type(e).__name__ for e in history[-2:]] == ["TaskTimedOut", "TaskRetryScheduled"]
    assert (history[-2].kind, history[-2].attempt) == ("heartbeat", 1)
