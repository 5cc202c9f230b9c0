"""The library's Postgres recorder, plus statements run in the same transaction as an insert.

``inline`` statements keep small operational tables (the running attempts with their
leases) exactly in step with the events that start and end attempts: both commit or neither.
They run before the library takes its table lock, so they add no time under the lock.
"""

from __future__ import annotations

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


class LedgerRecorder(PostgresApplicationRecorder):
    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        run_inline(curs, kwargs.get("inline", ()))
        super()._insert_events(curs, stored_events, **kwargs)


def run_inline(cursor: Cursor[Any], statements: Sequence[Statement]) -> None:
    for statement in statements:
        cursor.execute(statement.query, statement.params)
