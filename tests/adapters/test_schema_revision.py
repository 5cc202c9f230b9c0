"""Starting a process on an up-to-date schema runs no DDL (so it never queues behind, or
deadlocks with, the workers' row locks); a schema of an older release is brought up to
date once."""

from __future__ import annotations

import threading

import psycopg
from psycopg import sql

from execution_ledger.adapters.postgres.schema import (
    REVISION_TABLE,
    create_schema,
    schema_fingerprint,
)
from execution_ledger.adapters.runtime import Runtime, all_projections

HANG = 30.0  # seconds: only a hang fails these tests


def stored(runtime: Runtime) -> str:
    table = sql.Identifier(runtime.settings.schema, REVISION_TABLE)
    with runtime.store.transaction() as cursor:
        row = cursor.execute(sql.SQL("SELECT fingerprint FROM {}").format(table)).fetchone()
    assert row is not None
    return str(row["fingerprint"])


def create_in_thread(database_url: str, schema: str) -> threading.Thread:
    thread = threading.Thread(
        target=create_schema, args=(database_url, schema, all_projections(schema)), daemon=True
    )
    thread.start()
    return thread


def start_after_older_release(
    runtime: Runtime, database_url: str, change: sql.SQL, table: str
) -> None:
    """Leave the schema as an older release did (its fingerprint, and ``change`` made to
    ``table``), then start a process on it and wait for its schema step."""
    schema = runtime.settings.schema
    with runtime.store.transaction() as cursor:
        cursor.execute(
            sql.SQL("UPDATE {} SET fingerprint = 'older'").format(
                sql.Identifier(schema, REVISION_TABLE)
            )
        )
        cursor.execute(change.format(sql.Identifier(schema, table)))
    starting = create_in_thread(database_url, schema)
    starting.join(HANG)
    assert not starting.is_alive()


def test_an_up_to_date_schema_takes_no_table_lock_at_start(
    runtime: Runtime, database_url: str
) -> None:
    schema = runtime.settings.schema
    assert stored(runtime) == schema_fingerprint(schema, all_projections(schema))
    with psycopg.connect(database_url) as busy:  # a worker mid-round, holding row locks
        for table in ("dispatch_queue", "task_view", "worker_nodes", "ledger_events"):
            busy.execute(
                sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(sql.Identifier(schema, table))
            )
        starting = create_in_thread(database_url, schema)
        starting.join(HANG)
        assert not starting.is_alive(), "a start on an up-to-date schema waited for a lock"
        busy.rollback()


def test_a_schema_of_an_older_release_is_brought_up_to_date_once(
    runtime: Runtime, database_url: str
) -> None:
    schema = runtime.settings.schema
    start_after_older_release(
        runtime, database_url, sql.SQL("ALTER TABLE {} DROP COLUMN fair_key"), "dispatch_queue"
    )
    assert stored(runtime) == schema_fingerprint(schema, all_projections(schema))
    with runtime.store.transaction() as cursor:
        row = cursor.execute(
            "SELECT count(*) AS n FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'dispatch_queue' AND column_name = 'fair_key'",
            (schema,),
        ).fetchone()
    assert row is not None and row["n"] == 1


def test_an_upgrade_drops_the_task_views_position_index_that_served_no_query(
    runtime: Runtime, database_url: str
) -> None:
    schema = runtime.settings.schema
    start_after_older_release(
        runtime,
        database_url,
        sql.SQL("CREATE INDEX task_view_position_idx ON {} (position)"),
        "task_view",
    )
    with runtime.store.transaction() as cursor:
        indexes = cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'task_view'",
            (schema,),
        ).fetchall()
    names = {row["indexname"] for row in indexes}
    assert "task_view_position_idx" not in names
    assert "task_view_type_idx" in names  # the others stay
