"""The library's Postgres recorder, plus statements run in the same transaction as an insert.

``inline`` statements keep small operational tables (the running attempts with their
leases) exactly in step with the events that start and end attempts: both commit or neither.
They run before the library takes its table lock, so they add no time under the lock.

The insert itself keeps the library's table lock and NOTIFY but, for up to
``VALUES_INSERT_LIMIT`` events, sends the rows as plain parameters of one multi-row
``INSERT … VALUES`` instead of the library's array of a composite type: psycopg dumps a
composite array element by element in Python (about 10 µs per event here), scalars in C.
Larger saves (a big DAG) take the library's statement. Both return the notification ids in
row order, as the library expects.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import Cursor, sql
from psycopg.rows import DictRow


@dataclass(frozen=True)
class Statement:
    query: sql.Composable | str
    params: tuple[Any, ...] = ()


VALUES_INSERT_LIMIT = 256


class LedgerRecorder(PostgresApplicationRecorder):
    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        run_inline(curs, kwargs.get("inline", ()))
        super()._insert_events(curs, stored_events, **kwargs)

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        if len(stored_events) > VALUES_INSERT_LIMIT:
            super()._insert_stored_events(curs, stored_events, **kwargs)
            return
        self._lock_table(curs)
        self._notify_channel(curs)
        params: list[Any] = []
        for event in stored_events:
            params += (event.originator_id, event.originator_version, event.topic, event.state)
        curs.execute(self._values_insert(len(stored_events)), params)

    @functools.lru_cache(maxsize=32)  # noqa: B019 - one recorder per store, a few sizes
    def _values_insert(self, count: int) -> str:
        table = sql.Identifier(self.datastore.schema, self.events_table_name)
        rows = ", ".join(["(%s, %s, %s, %s)"] * count)
        return (
            sql.SQL("INSERT INTO {} (originator_id, originator_version, topic, state) VALUES ")
            .format(table)
            .as_string(None)
            + rows
            + " RETURNING notification_id"
        )


def run_inline(cursor: Cursor[Any], statements: Sequence[Statement]) -> None:
    for statement in statements:
        cursor.execute(statement.query, statement.params)
