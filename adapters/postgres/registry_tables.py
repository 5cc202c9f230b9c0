"""The reads and writes of registry versions that are not events: what work is live (for
the refusals of ``domain/registry_change.py``), the latest recorded version, and the version
each worker node runs (``worker_nodes.registry_version``).

Live work is the dispatch queue (every task not yet ended, exact, written with the events)
joined to each task's ``TaskEnqueued`` for its type, args and whether it is ad hoc.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from psycopg import sql

from execution_ledger.adapters.postgres.event_store import EventStore, RecordedEvent
from execution_ledger.adapters.postgres.running import WORKERS
from execution_ledger.domain.registry_change import ARGS_CHECKED
from execution_ledger.domain.registry_history import registry_history_id

_LIVE = """
SELECT d.queue, x.j ->> 'type_name' AS type_name,
       jsonb_typeof(x.j -> 'adapter_settings') = 'object' AS adhoc, count(*) AS tasks
FROM {dispatch} AS d
JOIN {events} AS e ON e.originator_id = d.task_id AND e.originator_version = 1
CROSS JOIN LATERAL (SELECT convert_from(e.state, 'UTF8')::jsonb AS j) AS x
GROUP BY 1, 2, 3
"""

_ARGS = """
SELECT d.task_id, x.j -> 'args' AS args
FROM {dispatch} AS d
JOIN {events} AS e ON e.originator_id = d.task_id AND e.originator_version = 1
CROSS JOIN LATERAL (SELECT convert_from(e.state, 'UTF8')::jsonb AS j) AS x
WHERE x.j ->> 'type_name' = %s AND jsonb_typeof(x.j -> 'adapter_settings') IS DISTINCT FROM 'object'
ORDER BY d.seq
LIMIT %s
"""

_LATEST = "SELECT max(originator_version) AS version FROM {events} WHERE originator_id = %s"

# One stored event of the history: a version's (aggregate version = version + 1), or the last.
_CHANGE = """
SELECT notification_id, originator_id, originator_version, topic, state FROM {events}
WHERE originator_id = %(id)s AND (%(version)s::int IS NULL OR originator_version = %(version)s)
ORDER BY originator_version DESC LIMIT 1
"""


class RegistryTables:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        names = {"dispatch": store.dispatch_queue.table, "events": store.table}
        self._sql_live = sql.SQL(_LIVE).format(**names)
        self._sql_args = sql.SQL(_ARGS).format(**names)
        self._sql_latest = sql.SQL(_LATEST).format(events=store.table)
        self._sql_change = sql.SQL(_CHANGE).format(events=store.table)
        self._sql_node = sql.SQL(
            "UPDATE {} SET registry_version = %s, queues = %s WHERE worker = %s"
        ).format(sql.Identifier(store.schema, WORKERS))

    def live_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Live tasks per registry task type (ad-hoc ones left out) and per queue."""
        by_type: dict[str, int] = {}
        by_queue: dict[str, int] = {}
        with self.store.transaction() as cursor:
            for row in cursor.execute(self._sql_live).fetchall():
                by_queue[row["queue"]] = by_queue.get(row["queue"], 0) + row["tasks"]
                if not row["adhoc"]:
                    name = row["type_name"]
                    by_type[name] = by_type.get(name, 0) + row["tasks"]
        return by_type, by_queue

    def live_args(self, type_name: str, limit: int = ARGS_CHECKED) -> list[tuple[UUID, Any]]:
        """The args of up to ``limit`` live tasks of ``type_name``, oldest first."""
        with self.store.transaction() as cursor:
            rows = cursor.execute(self._sql_args, (type_name, limit)).fetchall()
        return [(row["task_id"], row["args"]) for row in rows]

    def latest_version(self) -> int:
        """The latest recorded registry version (0: none), from one index lookup: the
        history's first event starts it, each later one is a version."""
        with self.store.transaction() as cursor:
            row = cursor.execute(self._sql_latest, (registry_history_id(),)).fetchone()
        aggregate_version = row["version"] if row and row["version"] is not None else 1
        return int(aggregate_version) - 1

    def change(self, version: int | None = None) -> RecordedEvent | None:
        """The ``RegistryChanged`` of ``version`` (None: the latest) with its position, read
        alone (not the whole history); None when there is no such version."""
        aggregate_version = None if version is None else version + 1
        with self.store.transaction() as cursor:
            row = cursor.execute(
                self._sql_change, {"id": registry_history_id(), "version": aggregate_version}
            ).fetchone()
        if row is None or row["originator_version"] < 2:
            return None
        stored = StoredEvent(
            originator_id=row["originator_id"],
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=bytes(row["state"]),
        )
        return RecordedEvent(row["notification_id"], self.store.to_event(stored))

    def node_runs(self, worker: str, version: int | None, queues: Sequence[str]) -> None:
        """Say which registry version a worker node runs now, and the queues it serves."""
        with self.store.transaction() as cursor:
            cursor.execute(self._sql_node, (version, list(queues), worker))
