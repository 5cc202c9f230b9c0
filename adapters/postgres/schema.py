"""Creating the ledger's schema once: the events table (the library's), the projections'
tables and the position table. Serialised by an advisory lock, so many processes may start
at once; workers then open the store with table creation off.

A schema already up to date is left alone: the statements this release would run are
fingerprinted (SHA-256 of their text) and the fingerprint stored last in
``ledger_schema_revision``; a process that finds it equal runs no DDL at all. So a node
starting beside busy ones takes no table lock (``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``
and ``CREATE INDEX IF NOT EXISTS`` lock their table even when there is nothing to do, and a
start in the middle of worker rounds could deadlock with them)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from execution_ledger.adapters.postgres import log_horizon, rate_limits
from execution_ledger.adapters.postgres.audit import (
    APPEND_ONLY_MESSAGE,
    TRIGGERS_TEXT,
    protect_events_table,
)
from execution_ledger.adapters.postgres.coalescing_keys import CoalescingKeys
from execution_ledger.adapters.postgres.dispatch_queue import TABLE as DISPATCH_QUEUE
from execution_ledger.adapters.postgres.dispatch_queue import DispatchQueue
from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.fair_candidates import (
    create_index_statement as create_fair_index,
)
from execution_ledger.adapters.postgres.grants import may_create_in
from execution_ledger.adapters.postgres.projection_runner import POSITIONS_TABLE
from execution_ledger.adapters.postgres.running import RunningTables
from execution_ledger.adapters.postgres.schedule_tables import ScheduleTables
from execution_ledger.adapters.retention import archive_sql
from execution_ledger.projections.base import Projection
from execution_ledger.projections.readiness import EDGES as READINESS_EDGES
from execution_ledger.projections.readiness import NODES as READINESS_NODES

REVISION_TABLE = "ledger_schema_revision"


def create_schema(database_url: str, schema: str, projections: Iterable[Projection]) -> None:
    projections = list(projections)
    fingerprint = schema_fingerprint(schema, projections)
    with psycopg.connect(database_url, autocommit=True) as conn:
        if _stored_fingerprint(conn, schema) == fingerprint:
            return  # up to date: no DDL, no table lock
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"migrate:{schema}",))
        try:
            if not may_create_in(conn, schema):
                return  # a runtime role (``ledger db grant``): the owner keeps the schema
            if _stored_fingerprint(conn, schema) == fingerprint:
                return  # another process brought it up to date while we waited
            _create(conn, database_url, schema, projections)
            _store_fingerprint(conn, schema, fingerprint)
        finally:
            conn.execute(
                "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (f"migrate:{schema}",)
            )


def _create(
    conn: psycopg.Connection[Any], database_url: str, schema: str, projections: list[Projection]
) -> None:
    """Every statement of the schema (each idempotent)."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    EventStore(database_url, schema, create_table=True, pool_size=1).close()
    protect_events_table(conn, schema)
    for statement in log_horizon.create_statements(schema):
        conn.execute(statement)
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, position bigint NOT NULL)"
            ).format(sql.Identifier(schema, POSITIONS_TABLE))
        )
        cursor = conn.cursor()
        for projection in projections:
            projection.create(cursor)
        cursor.execute(RunningTables(schema).create_statement())
        cursor.execute(rate_limits.create_statement(schema))
        cursor.execute(ScheduleTables(schema).create_statement())
        cursor.execute(CoalescingKeys(schema).create_statement())
        _create_dispatch_queue(cursor, schema)
        cursor.execute(create_fair_index(DispatchQueue(schema).table))
        for statement in archive_sql.create_statements(schema):
            cursor.execute(statement)


class _Recorder:
    """A cursor stand-in that keeps the text of what it is asked to execute."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def execute(self, query: Any, params: Any = None) -> _Recorder:
        text = query if isinstance(query, str) else query.as_string(None)
        self.texts.append(text if isinstance(text, str) else text.decode())
        return self


def schema_fingerprint(schema: str, projections: Iterable[Projection]) -> str:
    """SHA-256 of the text of the statements ``create_schema`` runs for this release."""
    recorder = _Recorder()
    for projection in projections:
        projection.create(recorder)  # type: ignore[arg-type]  # only ``execute`` is used
    statements: list[Any] = [
        *log_horizon.create_statements(schema),
        RunningTables(schema).create_statement(),
        rate_limits.create_statement(schema),
        ScheduleTables(schema).create_statement(),
        CoalescingKeys(schema).create_statement(),
        DispatchQueue(schema).create_statement(),
        create_fair_index(DispatchQueue(schema).table),
        *archive_sql.create_statements(schema),
        APPEND_ONLY_MESSAGE,
        TRIGGERS_TEXT,
    ]
    for statement in statements:
        recorder.execute(statement)
    return hashlib.sha256("\n;\n".join(recorder.texts).encode()).hexdigest()


def _stored_fingerprint(conn: psycopg.Connection[Any], schema: str) -> str | None:
    table = f'"{schema}"."{REVISION_TABLE}"'
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    if row is None or not row[0]:
        return None
    query = sql.SQL("SELECT fingerprint FROM {}").format(sql.Identifier(schema, REVISION_TABLE))
    try:
        found = conn.execute(query).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None  # a role granted before the table existed: look the long way
    return None if found is None else str(found[0])


def _store_fingerprint(conn: psycopg.Connection[Any], schema: str, fingerprint: str) -> None:
    table = sql.Identifier(schema, REVISION_TABLE)
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (only_row boolean PRIMARY KEY DEFAULT true "
                "CHECK (only_row), fingerprint text NOT NULL, updated_at timestamptz NOT NULL)"
            ).format(table)
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (fingerprint, updated_at) VALUES (%s, now()) ON CONFLICT "
                "(only_row) DO UPDATE SET fingerprint = excluded.fingerprint, "
                "updated_at = excluded.updated_at"
            ).format(table),
            (fingerprint,),
        )


def _create_dispatch_queue(cursor: psycopg.Cursor[Any], schema: str) -> None:
    """Create the dispatch queue; a schema that had none yet gets it filled from its
    readiness graph (the live tasks, in enqueue order)."""
    existing = cursor.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}"."{DISPATCH_QUEUE}"',)
    ).fetchone()
    queue = DispatchQueue(schema)
    cursor.execute(queue.create_statement())
    if existing is not None and not existing[0]:
        cursor.execute(
            queue.fill_from_readiness(
                sql.Identifier(schema, READINESS_NODES), sql.Identifier(schema, READINESS_EDGES)
            )
        )
