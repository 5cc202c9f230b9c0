"""The learning dataset as a feed for learn hooks: rows after a position, delivered with the
position recorded in the same transaction (``projection_positions``, name ``learn_hooks``).

Only rows the dataset projection has committed up to its own recorded position are read, so
a row that commits later can never be passed over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from psycopg import sql

from adapters.postgres.event_store import EventStore
from adapters.postgres.projection_runner import POSITIONS_TABLE

FEED_NAME = "learn_hooks"
DATASET_NAME = "dataset"


class PostgresDatasetFeed:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        positions = sql.Identifier(store.schema, POSITIONS_TABLE)
        self._sql_rows = sql.SQL(
            "SELECT * FROM {rows} WHERE position > %s AND position <= "
            "(SELECT position FROM {positions} WHERE name = %s) ORDER BY position LIMIT %s"
        ).format(rows=sql.Identifier(store.schema, "attempt_dataset"), positions=positions)
        self._sql_read = sql.SQL("SELECT position FROM {} WHERE name = %s").format(positions)
        self._sql_write = sql.SQL(
            "INSERT INTO {} (name, position) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
        ).format(positions)
        self._sql_ensure = sql.SQL(
            "INSERT INTO {} (name, position) VALUES (%s, 0) ON CONFLICT (name) DO NOTHING"
        ).format(positions)
        self._sql_lock = sql.SQL("SELECT position FROM {} WHERE name = %s FOR UPDATE").format(
            positions
        )

    def position(self) -> int:
        with self.store.transaction() as cur:
            row = cur.execute(self._sql_read, (FEED_NAME,)).fetchone()
        return int(row["position"]) if row else 0

    def next_rows(self, after: int, limit: int) -> list[dict[str, Any]]:
        with self.store.transaction() as cur:
            return cur.execute(self._sql_rows, (after, DATASET_NAME, limit)).fetchall()

    def deliver(
        self, rows: Sequence[dict[str, Any]], call: Callable[[dict[str, Any], Any], None]
    ) -> None:
        with self.store.transaction() as cur:
            cur.execute(self._sql_ensure, (FEED_NAME,))
            if self._locked(cur) >= rows[0]["position"]:
                return  # another process delivered these already
            for row in rows:
                call(row, cur)
            cur.execute(self._sql_write, (FEED_NAME, rows[-1]["position"]))

    def reset(self, position: int) -> None:
        with self.store.transaction() as cur:
            cur.execute(self._sql_write, (FEED_NAME, position))

    def _locked(self, cur: Any) -> int:
        row = cur.execute(self._sql_lock, (FEED_NAME,)).fetchone()
        return int(row["position"]) if row else 0
