"""The tasks whose id lies in a range of ids: how a task id prefix is looked up.

A prefix of hex digits names the ids between it padded with ``0`` and padded with ``f``:
one range scan of the log's primary key (``originator_id``), kept to the tasks' events
(other aggregates share the log).
"""

from __future__ import annotations

from uuid import UUID

from psycopg import sql

from execution_ledger.adapters.postgres.event_store import EVENTS_TABLE, EventStore

TASK_TOPICS = "domain.task:%"


def task_ids_between(store: EventStore, low: UUID, high: UUID, limit: int) -> list[UUID]:
    """Up to ``limit`` task ids from ``low`` to ``high`` (inclusive), in id order."""
    query = sql.SQL(
        "SELECT DISTINCT originator_id FROM {} WHERE originator_id BETWEEN %s AND %s "
        "AND topic LIKE %s ORDER BY originator_id LIMIT %s"
    ).format(sql.Identifier(store.schema, EVENTS_TABLE))
    with store.transaction() as cursor:
        rows = cursor.execute(query, (low, high, TASK_TOPICS, limit)).fetchall()
    return [row["originator_id"] for row in rows]
