"""The library's Postgres recorder, plus statements run in the same transaction as an insert.

``inline`` statements keep small operational tables (the running attempts with their
leases) exactly in step with the events that start and end attempts: both commit or neither.

The insert keeps the library's NOTIFY but not its table lock: writers append concurrently
and readers stop at the log's horizon (``log_horizon.py``); in place of ``LOCK TABLE`` a
writer announces itself with one shared advisory lock. Announcement, NOTIFY and insert are
one statement, a call of ``ledger_log_append()`` (each statement costs the client ~20 µs of
Python in a pipeline, and a save ran three where it now runs one). The rows go as one JSON text
(id, version, topic, and where the state lies in the second parameter) that the server
unpacks in order (``jsonb``: parsed once, where each ``->>`` on ``json`` parses the row
again), and the states as one binary ``bytea`` (all of them end to end, cut with
``substring``: no hex to encode, send twice as long and decode, the cost of a save's
insert fell from ~100 to ~15 ms per 1,000 events), instead of the library's array of a
composite type: psycopg dumps a composite array element by element in Python (about 10 µs
per event here), and a statement with one placeholder per value is parsed again on every
call (psycopg caches statements of at most 50 parameters), while one string is dumped in C.
It returns the notification ids in row order, as the library expects.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import AsyncCursor, Cursor, sql
from psycopg.rows import DictRow

from execution_ledger.adapters.postgres.log_horizon import append_statement, enter_statement


@dataclass(frozen=True)
class Statement:
    query: sql.SQL | sql.Composed | str
    params: tuple[Any, ...] = ()


class LedgerRecorder(PostgresApplicationRecorder):
    def _lock_table(self, curs: Cursor[DictRow]) -> None:
        """Not the library's ``LOCK TABLE``: announce this transaction to the log's readers
        (a shared advisory lock keyed by the lowest position it can be given). The ledger's
        own appends announce inside ``ledger_log_append`` and never call this; it stays so
        that no path of the library's can take the table lock."""
        curs.execute(self._enter_log)

    @functools.cached_property
    def _enter_log(self) -> str:
        return enter_statement(self.datastore.schema)

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        run_inline(curs, kwargs.get("inline", ()))
        super()._insert_events(curs, stored_events, **kwargs)

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """The library's three statements (table lock, NOTIFY, insert) as one call of
        ``ledger_log_append`` (``log_horizon.py``), which announces the writer to the
        readers, notifies and inserts."""
        curs.execute(*self.append_call(stored_events))

    def append_call(self, stored_events: Sequence[StoredEvent]) -> tuple[str, tuple[bytes, str]]:
        """The ``ledger_log_append`` statement of ``stored_events`` and its parameters."""
        rows = []
        start = 1  # substring() counts from 1
        for e in stored_events:
            rows.append([str(e.originator_id), e.originator_version, e.topic, start, len(e.state)])
            start += len(e.state)
        states = b"".join(e.state for e in stored_events)
        return self._append, (states, json.dumps(rows))

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The positions ``ledger_log_append`` returned (the library's own check expects
        the status of an ``INSERT``; the call's is a ``SELECT``)."""
        return [row["notification_id"] for row in curs.fetchall()]

    @functools.cached_property
    def _append(self) -> str:
        return append_statement(self.datastore.schema)


def id_list(ids: Iterable[UUID]) -> str:
    """Ids as one comma-separated text, for ``string_to_array(%s, ',')::uuid[]`` (psycopg
    dumps a ``uuid[]`` element by element in Python, one string in C)."""
    return ",".join(str(each) for each in ids)


def run_inline(cursor: Cursor[Any], statements: Sequence[Statement]) -> None:
    for statement in statements:
        cursor.execute(statement.query, statement.params)


async def run_inline_on_loop(cursor: AsyncCursor[Any], statements: Sequence[Statement]) -> None:
    for statement in statements:
        await cursor.execute(statement.query, statement.params)
