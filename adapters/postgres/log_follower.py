"""A follower of the log outside the projection runners (the NATS egress): its position in
``projection_positions`` (registered at 0, moved only forward), its turn to publish (a
session advisory lock on ``<schema>.<name>``: one process at a time, the others stand by),
its wake-ups (LISTEN on the events table's channel) and its reads of the log.

The statements live here so that the way in that follows the log (``nats/egress.py``) holds
no SQL; it gets a follower from ``Runtime.log_follower(name)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import sql

from execution_ledger.adapters.postgres.event_store import EventStore, RecordedEvent
from execution_ledger.adapters.postgres.projection_runner import POSITIONS_TABLE
from execution_ledger.adapters.refusals import DATABASE_ERRORS
from execution_ledger.projections.audit_chain import UndecodableEvent

# What following the log may fail with while the database is unreachable or restarting.
FOLLOWER_FAILURES = (*DATABASE_ERRORS, psycopg.Error, OSError)

_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"


class Appends:
    """The appends to the log, heard on a LISTEN connection while this follower leads."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def wait(self, timeout: float) -> None:
        """Until the next append is heard, or ``timeout`` seconds."""
        async for _ in self._conn.notifies(timeout=timeout, stop_after=1):
            pass


class LogFollower:
    def __init__(self, store: EventStore, name: str) -> None:
        self.store = store
        self.name = name
        self.schema = store.schema
        positions = sql.Identifier(store.schema, POSITIONS_TABLE)
        self._sql_register = sql.SQL(
            "INSERT INTO {} (name, position) VALUES (%s, 0) ON CONFLICT DO NOTHING"
        ).format(positions)
        self._sql_read = sql.SQL("SELECT position FROM {} WHERE name = %s").format(positions)
        self._sql_advance = sql.SQL(
            "UPDATE {} SET position = GREATEST(position, %s) WHERE name = %s"
        ).format(positions)
        self._sql_listen = sql.SQL("LISTEN {}").format(sql.Identifier(store.recorder.channel_name))

    # -- the position (blocking) --------------------------------------------------------

    def position(self) -> int:
        """The follower's position (registered at 0 on first use)."""
        with self.store.transaction() as cursor:
            cursor.execute(self._sql_register, (self.name,))
            row = cursor.execute(self._sql_read, (self.name,)).fetchone()
        assert row is not None
        return int(row["position"])

    def advance(self, position: int) -> None:
        """Move the position forward to ``position`` (never back)."""
        with self.store.transaction() as cursor:
            cursor.execute(self._sql_advance, (position, self.name))

    # -- the log (blocking) -------------------------------------------------------------

    def read(self, after: int, limit: int) -> list[RecordedEvent]:
        """Events after a position, in log order, at most ``limit``."""
        return self.store.read(after, limit)

    def head_position(self) -> int:
        return self.store.head_position()

    @staticmethod
    def undecodable(recorded: RecordedEvent) -> str | None:
        """Why a stored event does not decode (None when it does)."""
        event = recorded.event
        return str(event.error) if isinstance(event, UndecodableEvent) else None

    # -- leading --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def leading(self) -> AsyncIterator[Appends | None]:
        """A session of its own: the appends it hears when it took the follower's lock
        (held until the session ends), else None (another process leads)."""
        async with await psycopg.AsyncConnection.connect(
            self.store.database_url, autocommit=True
        ) as conn:
            cursor = await conn.execute(_TRY_LOCK, (f"{self.schema}.{self.name}",))
            row = await cursor.fetchone()
            if not (row and row[0]):
                yield None
                return
            await conn.execute(self._sql_listen)
            yield Appends(conn)
