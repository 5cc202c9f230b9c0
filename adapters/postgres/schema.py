"""Creating the ledger's schema once: the events table (the library's), the projections'
tables and the position table. Serialised by an advisory lock, so many processes may start
at once; workers then open the store with table creation off."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from adapters.postgres import log_horizon, rate_limits
from adapters.postgres.audit import protect_events_table
from adapters.postgres.coalescing_keys import CoalescingKeys
from adapters.postgres.dispatch_queue import TABLE as DISPATCH_QUEUE
from adapters.postgres.dispatch_queue import DispatchQueue
from adapters.postgres.event_store import EventStore
from adapters.postgres.fair_candidates import create_index_statement as create_fair_index
from adapters.postgres.grants import may_create_in
from adapters.postgres.projection_runner import POSITIONS_TABLE
from adapters.postgres.running import RunningTables
from adapters.postgres.schedule_tables import ScheduleTables
from adapters.retention import archive_sql
from projections.base import Projection
from projections.readiness import EDGES as READINESS_EDGES
from projections.readiness import NODES as READINESS_NODES


def create_schema(database_url: str, schema: str, projections: Iterable[Projection]) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"migrate:{schema}",))
        try:
            if not may_create_in(conn, schema):
                return  # a runtime role (``ledger db grant``): the owner keeps the schema
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            EventStore(database_url, schema, create_table=True, pool_size=1).close()
            protect_events_table(conn, schema)
            for statement in log_horizon.create_statements(schema):
                conn.execute(statement)
            with conn.transaction():
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} "
                        "(name text PRIMARY KEY, position bigint NOT NULL)"
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
        finally:
            conn.execute(
                "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (f"migrate:{schema}",)
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
