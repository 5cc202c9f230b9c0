"""When each cron schedule was last looked at (so missed ticks can be found after downtime),
and whether it is paused (kept in step with its ScheduleControl events).

The time only ever moves forward (``greatest``), whichever node writes.
"""

from __future__ import annotations

from datetime import datetime

from psycopg import sql

from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.running import RunningTables
from execution_ledger.processors.cron import Look


class PostgresScheduleClock:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        table = RunningTables(store.schema).schedule_clock
        self._sql_read = sql.SQL("SELECT name, looked_at, paused FROM {}").format(table)
        self._sql_write = sql.SQL(
            "INSERT INTO {0} (name, looked_at) VALUES (%s, %s) ON CONFLICT (name) "
            "DO UPDATE SET looked_at = greatest({0}.looked_at, excluded.looked_at)"
        ).format(table)

    def looks(self) -> dict[str, Look]:
        """Each known schedule's last look (None: never looked at) and paused flag."""
        with self.store.transaction() as cur:
            rows = cur.execute(self._sql_read).fetchall()
        return {r["name"]: Look(r["looked_at"], r["paused"]) for r in rows}

    def looked(self, name: str, at: datetime) -> None:
        with self.store.transaction() as cur:
            cur.execute(self._sql_write, (name, at))
