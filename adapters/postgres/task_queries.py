"""Queries of the task view and readiness graph, shared by the CLI and (later) the HTTP API."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql

from adapters.postgres.event_store import EventStore
from domain.errors import InvalidQuery, TaskNotFound

MAX_PAGE = 500


@dataclass(frozen=True)
class TaskFilter:
    state: str | None = None
    type_name: str | None = None
    queue: str | None = None
    lane: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def list_tasks(
    store: EventStore, where: TaskFilter, limit: int = 50, cursor: str | None = None
) -> Page:
    """Newest first; ``cursor`` continues after the last row of the previous page."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidQuery(f"limit must be between 1 and {MAX_PAGE}")
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in (
        ("state", where.state),
        ("type_name", where.type_name),
        ("queue", where.queue),
        ("lane", where.lane),
    ):
        if value is not None:
            conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if where.tag is not None:
        conditions.append(sql.SQL("%s = ANY(tags)"))
        params.append(where.tag)
    if cursor is not None:
        enqueued_at, task_id = _decode_cursor(cursor)
        conditions.append(sql.SQL("(enqueued_at, task_id) < (%s, %s)"))
        params.extend([enqueued_at, task_id])
    query = sql.SQL("SELECT * FROM {} {} ORDER BY enqueued_at DESC, task_id DESC LIMIT %s").format(
        sql.Identifier(store.schema, "task_view"),
        sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL(""),
    )
    with store.transaction() as cur:
        rows = cur.execute(query, (*params, limit + 1)).fetchall()
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return Page(rows=rows[:limit], next_cursor=next_cursor)


def get_task_row(store: EventStore, task_id: UUID) -> dict[str, Any]:
    query = sql.SQL("SELECT * FROM {} WHERE task_id = %s").format(
        sql.Identifier(store.schema, "task_view")
    )
    with store.transaction() as cur:
        row = cur.execute(query, (task_id,)).fetchone()
    if row is None:
        raise TaskNotFound(f"no task {task_id}")
    return row


def ready_tasks(store: EventStore, queue: str, limit: int = 100) -> list[dict[str, Any]]:
    """The ready set of a queue, in dispatch order (priority first, then enqueue order)."""
    query = sql.SQL(
        "SELECT task_id, queue, priority, lane, state, depth, run_at FROM {} "
        "WHERE queue = %s AND (state = 'ready' OR (state = 'scheduled' AND run_at <= now())) "
        "ORDER BY priority DESC, enqueued_position LIMIT %s"
    ).format(sql.Identifier(store.schema, "readiness_nodes"))
    with store.transaction() as cur:
        return cur.execute(query, (queue, limit)).fetchall()


def _encode_cursor(row: dict[str, Any]) -> str:
    text = f"{row['enqueued_at'].isoformat()}|{row['task_id']}"
    return base64.urlsafe_b64encode(text.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        stamp, task_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(stamp), UUID(task_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidQuery(f"invalid cursor {cursor!r}") from None
