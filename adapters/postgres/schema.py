"""Creating the ledger's schema once: the events table (the library's), the projections'
tables and the position table. Serialised by an advisory lock, so many processes may start
at once; workers then open the store with table creation off."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql

from adapters.postgres.audit import protect_events_table
from adapters.postgres.event_store import EventStore
from adapters.postgres.projection_runner import POSITIONS_TABLE
from adapters.postgres.running import RunningTables
from projections.base import Projection


def create_schema(database_url: str, schema: str, projections: Iterable[Projection]) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"migrate:{schema}",))
        try:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            EventStore(database_url, schema, create_table=True, pool_size=1).close()
            protect_events_table(conn, schema)
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
        finally:
            conn.execute(
                "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (f"migrate:{schema}",)
            )
