"""When each cron schedule was last looked at (so missed ticks can be found after downtime).

Only ever moves forward (``greatest``), whichever node writes.
"""

from __future__ import annotations

from datetime import datetime

from psycopg import sql

from adapters.postgres.event_store import EventStore
from adapters.postgres.running import RunningTables


class PostgresScheduleClock:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        table = RunningTables(store.schema).schedule_clock
        self._sql_read = sql.SQL("SELECT name, looked_at FROM {}").format(table)
        self._sql_write = sql.SQL(
            "INSERT INTO {0} (name, looked_at) VALUES (%s, %s) ON CONFLICT (name) "
            "DO UPDATE SET looked_at = greatest({0}.looked_at, excluded.looked_at)"
        ).format(table)

    def last_looked(self) -> dict[str, datetime]:
        with self.store.transaction() as cur:
            return {r["name"]: r["looked_at"] for r in cur.execute(self._sql_read).fetchall()}

    def looked(self, name: str, at: datetime) -> None:
        with self.store.transaction() as cur:
            cur.execute(self._sql_write, (name, at))
