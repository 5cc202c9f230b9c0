"""A log written by release 0.1 (before the one import name) loads, folds and verifies.

``tests/fixtures/release_0_1_log.json`` holds the ``ledger_events`` rows a 0.1 node wrote
(commit d6f00f6: a task graph over Lua, Python and shell, a retried failure, a skipped
dependent, a cancelled task; topics such as ``domain.task:Task.TaskEnqueued``). Copied into a
new schema, today's code must decode every event, rebuild every read model from them, find
the audit chain intact, and keep appending with the same topics.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from execution_ledger.adapters.postgres.audit import verify_chain
from execution_ledger.adapters.postgres.schema import create_schema
from execution_ledger.adapters.runtime import Runtime, all_projections, open_runtime
from execution_ledger.domain.task import TaskState

FIXTURE = Path(__file__).parents[1] / "fixtures" / "release_0_1_log.json"


def copy_release_log(database_url: str, schema: str) -> dict[str, Any]:
    """Create the schema's tables and insert the 0.1 rows, positions and all."""
    log = json.loads(FIXTURE.read_text())
    create_schema(database_url, schema, all_projections(schema))
    columns = log["columns"]
    table = sql.Identifier(schema, "ledger_events")
    insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        table,
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    state = columns.index("state")
    with psycopg.connect(database_url, autocommit=True) as conn:
        for row in log["rows"]:
            values = list(row)
            values[state] = base64.b64decode(values[state])
            conn.execute(insert, values)
        conn.execute(
            sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'notification_id'), %s)").format(
                sql.Literal(f"{schema}.ledger_events")
            ),
            (max(row[columns.index("notification_id")] for row in log["rows"]),),
        )
    return log


def stored_topics(runtime: Runtime) -> list[str]:
    with runtime.store.transaction() as cursor:
        table = sql.Identifier(runtime.settings.schema, "ledger_events")
        rows = cursor.execute(sql.SQL("SELECT topic FROM {} ORDER BY notification_id").format(table))
        return [row["topic"] for row in rows.fetchall()]


def test_a_release_0_1_log_loads_folds_and_verifies(database_url: str, schema: str, ledger_env: None) -> None:
    log = copy_release_log(database_url, schema)
    runtime = open_runtime(pool_size=2)
    try:
        runtime.catch_up()
        ids = {ref: UUID(value) for ref, value in log["tasks"].items()}
        states = {ref: runtime.ledger.task(task_id).state for ref, task_id in ids.items()}
        assert states == {
            "square": TaskState.SUCCEEDED,
            "sum": TaskState.SUCCEEDED,
            "hello": TaskState.SUCCEEDED,
            "fail": TaskState.FAILED,
            "skipped": TaskState.SKIPPED,
        }
        assert runtime.ledger.task(UUID(log["cancelled"])).state is TaskState.CANCELLED
        assert runtime.ledger.task(ids["square"]).result == 144
        names = [type(r.event).__name__ for r in runtime.ledger.history(ids["fail"])]
        assert names[0] == "TaskEnqueued" and names[-1] == "TaskFailed"
        assert "TaskRetryScheduled" in names

        report = verify_chain(runtime.store, runtime.runners["audit_chain"])
        assert (report.ok, report.checked) == (True, len(log["rows"]))

        runtime.ledger.retry(ids["fail"])  # today's code appends to the old log
        runtime.catch_up()
        assert stored_topics(runtime)[-1] == "domain.task:Task.TaskRetryScheduled"
        assert runtime.ledger.task(ids["fail"]).state is TaskState.SCHEDULED  # run again at once
        report = verify_chain(runtime.store, runtime.runners["audit_chain"])
        assert (report.ok, report.checked) == (True, len(log["rows"]) + 1)
    finally:
        runtime.close()
