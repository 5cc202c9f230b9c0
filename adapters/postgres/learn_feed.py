"""The learning dataset as feeds for learn hooks: one feed per task type, its rows after the
feed's position, delivered with the new position recorded in the same transaction
(``projection_positions``, name ``learn_hooks:<type>``).

Only rows the dataset projection has committed up to its own recorded position are read, so
a row that commits later can never be passed over. A feed with no position yet starts where
the single shared position ``learn_hooks`` of earlier versions stood, if there is one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from psycopg import sql

from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.projection_runner import POSITIONS_TABLE

FEED_PREFIX = "learn_hooks"
DATASET_NAME = "dataset"


def feed_name(task_type: str) -> str:
    return f"{FEED_PREFIX}:{task_type}"


class PostgresDatasetFeed:
    """The dataset rows of one task type, for its learn hook."""

    def __init__(self, store: EventStore, task_type: str) -> None:
        self.store = store
        self.task_type = task_type
        self.name = feed_name(task_type)
        positions = sql.Identifier(store.schema, POSITIONS_TABLE)
        self._sql_rows = sql.SQL(
            "SELECT * FROM {rows} WHERE task_type = %s AND position > %s AND position <= "
            "(SELECT position FROM {positions} WHERE name = %s) ORDER BY position LIMIT %s"
        ).format(rows=sql.Identifier(store.schema, "attempt_dataset"), positions=positions)
        start = sql.SQL(
            "coalesce((SELECT position FROM {p} WHERE name = %s), "
            "(SELECT position FROM {p} WHERE name = %s), 0)"
        ).format(p=positions)
        self._sql_read = sql.SQL("SELECT {} AS position").format(start)
        self._sql_write = sql.SQL(
            "INSERT INTO {} (name, position) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
        ).format(positions)
        self._sql_ensure = sql.SQL(
            "INSERT INTO {p} (name, position) SELECT %s, {start} ON CONFLICT (name) DO NOTHING"
        ).format(p=positions, start=start)
        self._sql_lock = sql.SQL("SELECT position FROM {} WHERE name = %s FOR UPDATE").format(
            positions
        )

    def position(self) -> int:
        with self.store.transaction() as cur:
            row = cur.execute(self._sql_read, (self.name, FEED_PREFIX)).fetchone()
        return int(row["position"]) if row else 0

    def next_rows(self, after: int, limit: int) -> list[dict[str, Any]]:
        with self.store.transaction() as cur:
            return cur.execute(
                self._sql_rows, (self.task_type, after, DATASET_NAME, limit)
            ).fetchall()

    def deliver(
        self, rows: Sequence[dict[str, Any]], call: Callable[[dict[str, Any], Any], None]
    ) -> None:
        with self.store.transaction() as cur:
            cur.execute(self._sql_ensure, (self.name, self.name, FEED_PREFIX))
            if self._locked(cur) >= rows[0]["position"]:
                return  # another process delivered these already
            for row in rows:
                call(row, cur)
            cur.execute(self._sql_write, (self.name, rows[-1]["position"]))

    def reset(self, position: int) -> None:
        with self.store.transaction() as cur:
            cur.execute(self._sql_write, (self.name, position))

    def _locked(self, cur: Any) -> int:
        row = cur.execute(self._sql_lock, (self.name,)).fetchone()
        return int(row["position"]) if row else 0
