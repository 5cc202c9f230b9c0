"""The key tables of the coalescing enqueue options (``domain/coalescing.py``), written in
the same transactions as the events they go with, like ``idempotency_keys``:

- ``singleton_keys``: one row per (task type, key) held by a queued-or-running task. Taken
  by a plain insert in the save of the new task (a second holder is a unique violation, so
  that save is refused, whatever node or batch it came from); released by the save that ends
  the task (the dispatch queue's statements carry the delete, ``dispatch_queue.py``). A
  retry keeps it: a retried task has not ended.
- ``debounce_keys``: one row per (task type, key), naming the task that submissions of the
  key coalesce into. A row whose task has started stays until the next submission replaces
  it: that save deletes the row only if it still names the task it saw started, then
  inserts (two submissions that both saw it started: one insert is a unique violation).
  The task's end deletes its row too.

Both can be derived from the log (the live tasks' keys), so neither is a second source of
truth; they are what makes a key exact across concurrent writers.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from psycopg import sql

from execution_ledger.adapters.postgres.recorder import Statement

SINGLETON_KEYS = "singleton_keys"
DEBOUNCE_KEYS = "debounce_keys"

_CREATE = """
CREATE TABLE IF NOT EXISTS {singletons} (
    task_type text NOT NULL,
    key text NOT NULL,
    task_id uuid NOT NULL,
    PRIMARY KEY (task_type, key)
);
CREATE INDEX IF NOT EXISTS singleton_keys_task_idx ON {singletons} (task_id);
CREATE TABLE IF NOT EXISTS {debounces} (
    task_type text NOT NULL,
    key text NOT NULL,
    task_id uuid NOT NULL,
    PRIMARY KEY (task_type, key)
);
CREATE INDEX IF NOT EXISTS debounce_keys_task_idx ON {debounces} (task_id);
"""


class CoalescingKeys:
    """SQL of one schema's singleton and debounce keys."""

    def __init__(self, schema: str) -> None:
        self.singletons = sql.Identifier(schema, SINGLETON_KEYS)
        self.debounces = sql.Identifier(schema, DEBOUNCE_KEYS)
        self._sql_release = (
            sql.SQL(
                "WITH ids AS (SELECT unnest(string_to_array(%s, ','))::uuid AS id), "
                "singleton AS (DELETE FROM {} WHERE task_id IN (SELECT id FROM ids)) "
                "DELETE FROM {} WHERE task_id IN (SELECT id FROM ids)"
            )
            .format(self.singletons, self.debounces)
            .as_string(None)
        )

    def create_statement(self) -> sql.Composed:
        return sql.SQL(_CREATE).format(singletons=self.singletons, debounces=self.debounces)

    def released(self, task_ids: Sequence[str]) -> Statement:
        """The keys of ended tasks (ids as text), freed with their end."""
        return Statement(self._sql_release, (",".join(task_ids),))

    def singleton_taken(self, task_type: str, key: str, task_id: UUID) -> Statement:
        """Take a singleton key for a new task; a holder makes the save fail."""
        return Statement(
            sql.SQL("INSERT INTO {} (task_type, key, task_id) VALUES (%s, %s, %s)").format(
                self.singletons
            ),
            (task_type, key, task_id),
        )

    def debounce_taken(
        self, task_type: str, key: str, task_id: UUID, replacing: UUID | None
    ) -> list[Statement]:
        """Name a new task for a debounce key: the row of ``replacing`` (a task seen started)
        gives way; any other row makes the save fail."""
        statements = []
        if replacing is not None:
            statements.append(
                Statement(
                    sql.SQL(
                        "DELETE FROM {} WHERE task_type = %s AND key = %s AND task_id = %s"
                    ).format(self.debounces),
                    (task_type, key, replacing),
                )
            )
        statements.append(
            Statement(
                sql.SQL("INSERT INTO {} (task_type, key, task_id) VALUES (%s, %s, %s)").format(
                    self.debounces
                ),
                (task_type, key, task_id),
            )
        )
        return statements

    def holders_query(self, table: sql.Identifier) -> sql.Composed:
        """The holders of (task type, key) pairs given as two text arrays."""
        return sql.SQL(
            "SELECT k.task_type, k.key, k.task_id FROM {} AS k "
            "JOIN unnest(%s::text[], %s::text[]) AS w(task_type, key) "
            "ON k.task_type = w.task_type AND k.key = w.key"
        ).format(table)
