"""The archival's SQL: the one deletion path past the events table's append-only guard, the
archive head, which aggregates are past retention, and the removal of their rows from the
live tables.

Trust model (``docs/retention.md``): ``ledger_archive_delete(through, ids)`` is a SECURITY
DEFINER function owned by the schema's owner, with ``EXECUTE`` revoked from ``PUBLIC``: the
service role (``ledger db grant``: no ``DELETE`` on ``ledger_events``, no ``EXECUTE`` here)
can neither delete events nor call it. It refuses a ``through`` past the archive head
(``audit_archive_head``, written in the same transaction as the deletion, after the segments
were written and verified), and the guard lets a ``DELETE`` through only inside it (the
transaction-local setting ``ledger.archived_through``) and only for positions at or below
the archive head. An event is deleted only with every other event of its aggregate, and
never while its aggregate has an event after ``through``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.utils import get_topic
from psycopg import sql

from execution_ledger.adapters.postgres.dispatch_queue import TABLE as DISPATCH_QUEUE
from execution_ledger.adapters.postgres.log_horizon import EVENTS_TABLE
from execution_ledger.adapters.postgres.projection_runner import POSITIONS_TABLE
from execution_ledger.adapters.postgres.running import IDEMPOTENCY_KEYS, RUNNING
from execution_ledger.domain.access import AccessDenial
from execution_ledger.projections.audit_chain import ARCHIVE_HEAD_TABLE, UNDECODABLE_TABLE
from execution_ledger.projections.audit_chain import TABLE as CHAIN_TABLE
from execution_ledger.projections.dataset import DEPTHS, ROWS, TASKS
from execution_ledger.projections.readiness import EDGES, NODES
from execution_ledger.projections.task_view import TABLE as TASK_VIEW

DELETE_FUNCTION = "ledger_archive_delete"
DENIED_TOPIC = get_topic(AccessDenial.AccessDenied)
CHUNK = 5_000  # aggregates deleted per statement

_CREATE_DELETE = """
CREATE OR REPLACE FUNCTION {function}(through bigint, ids uuid[]) RETURNS SETOF uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE archived bigint;
BEGIN
    SELECT h.position INTO archived FROM {head} h;
    IF archived IS NULL OR through > archived THEN
        RAISE EXCEPTION 'ledger archive: position % is not archived (archive head: %)',
            through, coalesce(archived, 0);
    END IF;
    PERFORM set_config('ledger.archived_through', through::text, true);
    RETURN QUERY
        WITH gone AS (
            DELETE FROM {events} e
            WHERE e.originator_id = ANY(ids) AND e.notification_id <= through
              AND NOT EXISTS (SELECT 1 FROM {events} l
                              WHERE l.originator_id = e.originator_id
                                AND l.notification_id > through)
            RETURNING e.originator_id
        )
        SELECT DISTINCT g.originator_id FROM gone g;
    PERFORM set_config('ledger.archived_through', '', true);
END
$$
"""


def create_statements(schema: str) -> list[sql.Composed]:
    """The deletion function, callable by its owner only (safe to run at every start)."""
    function = sql.Identifier(schema, DELETE_FUNCTION)
    return [
        sql.SQL(_CREATE_DELETE).format(
            function=function,
            head=sql.Identifier(schema, ARCHIVE_HEAD_TABLE),
            events=sql.Identifier(schema, EVENTS_TABLE),
        ),
        sql.SQL("REVOKE ALL ON FUNCTION {}(bigint, uuid[]) FROM PUBLIC").format(function),
    ]


@dataclass(frozen=True)
class ArchiveHead:
    """The last archived position and the audit chain's hash there (0 and zeros: none)."""

    position: int
    chain_hash: bytes


def try_archive_lock(conn: psycopg.Connection[Any], schema: str) -> bool:
    """The schema's archival lock for the session (released when it closes)."""
    row = conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"archive:{schema}",)
    ).fetchone()
    return bool(row and _first(row))


def read_head(conn: psycopg.Connection[Any], schema: str) -> ArchiveHead | None:
    table = sql.Identifier(schema, ARCHIVE_HEAD_TABLE)
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table.as_string(conn),)).fetchone()
    if not exists or not _first(exists):
        return None
    row = conn.execute(sql.SQL("SELECT position, chain_hash FROM {}").format(table)).fetchone()
    if row is None:
        return None
    position, chain_hash = _pair(row)
    return ArchiveHead(int(position), bytes(chain_hash))


def archivable_through(conn: psycopg.Connection[Any], schema: str) -> int:
    """How far the log may be archived: no further than every projection has read (so the
    chain is there to check against, and no read model still has to see an event), nor
    than the NATS egress has published, when there is one (0 while a projection has not
    run at all)."""
    row = conn.execute(
        sql.SQL(
            "SELECT CASE WHEN count(*) FILTER (WHERE name = ANY(%s)) = %s "
            "THEN coalesce(min(position), 0) ELSE 0 END FROM {} WHERE name = ANY(%s)"
        ).format(sql.Identifier(schema, POSITIONS_TABLE)),
        (list(_FOLLOWERS), len(_FOLLOWERS), [*_FOLLOWERS, "nats_egress"]),
    ).fetchone()
    return int(_first(row)) if row else 0


_FOLLOWERS = ("task_view", "readiness", "audit_chain", "dataset")  # every projection


def chain_hash_at(conn: psycopg.Connection[Any], schema: str, position: int) -> bytes | None:
    row = conn.execute(
        sql.SQL("SELECT chain_hash FROM {} WHERE position = %s").format(
            sql.Identifier(schema, CHAIN_TABLE)
        ),
        (position,),
    ).fetchone()
    return None if row is None else bytes(_first(row))


def last_event_at_or_below(conn: psycopg.Connection[Any], schema: str, bound: int) -> int:
    row = conn.execute(
        sql.SQL("SELECT max(notification_id) FROM {} WHERE notification_id <= %s").format(
            sql.Identifier(schema, EVENTS_TABLE)
        ),
        (bound,),
    ).fetchone()
    value = _first(row) if row else None
    return int(value) if value is not None else 0


def count_events(conn: psycopg.Connection[Any], schema: str, after: int, through: int) -> int:
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM {} WHERE notification_id > %s AND notification_id <= %s"
        ).format(sql.Identifier(schema, EVENTS_TABLE)),
        (after, through),
    ).fetchone()
    return int(_first(row)) if row else 0


def stored_rows(
    conn: psycopg.Connection[Any], schema: str, after: int, through: int
) -> psycopg.Cursor[Any]:
    """The stored events with ``after < position <= through``, in log order (server side)."""
    cursor = conn.cursor(name="archive_rows")
    cursor.itersize = 5_000
    cursor.execute(
        sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {} WHERE notification_id > %s AND notification_id <= %s "
            "ORDER BY notification_id"
        ).format(sql.Identifier(schema, EVENTS_TABLE)),
        (after, through),
    )
    return cursor


@dataclass(frozen=True)
class PastRetention:
    """Which aggregates may go: tasks ended in a state of ``cutoffs`` before its cutoff,
    refused requests stamped before ``denial_cutoff``, all at or below ``through``."""

    cutoffs: dict[str, datetime]
    denial_cutoff: datetime | None
    through: int


_TASKS = """
FROM {view} v JOIN unnest(%s::text[], %s::timestamptz[]) AS c(state, cutoff)
ON v.state = c.state AND v.finished_at < c.cutoff
WHERE v.position <= %s
"""
_DENIALS = """
FROM {events} WHERE notification_id <= %s AND topic = %s
AND (convert_from(state, 'UTF8')::json -> 'timestamp' ->> '_data_')::timestamptz < %s
"""


def past_retention(
    conn: psycopg.Connection[Any], schema: str, rule: PastRetention
) -> tuple[int, int, int]:
    """How many tasks and refused requests are past retention (by the task view, which has
    read at least to ``through``), and the last position of any of them (0: none)."""
    tasks, last_task, denials, last_denial = 0, 0, 0, 0
    if rule.cutoffs:
        tasks, last_task = _summary(conn, "v.position", _tasks_from(schema), _task_params(rule))
    if rule.denial_cutoff is not None:
        denials, last_denial = _summary(
            conn, "notification_id", _denials_from(schema), _denial_params(rule)
        )
    return tasks, denials, max(last_task, last_denial)


def task_batch(
    conn: psycopg.Connection[Any], schema: str, rule: PastRetention, after: UUID, limit: int
) -> list[UUID]:
    """The next ``limit`` tasks past retention with an id after ``after``, by id."""
    if not rule.cutoffs:
        return []
    query = sql.SQL("SELECT v.task_id {} AND v.task_id > %s ORDER BY v.task_id LIMIT %s")
    rows = conn.execute(
        query.format(_tasks_from(schema)), (*_task_params(rule), after, limit)
    ).fetchall()
    return [_first(r) for r in rows]


def denial_batch(
    conn: psycopg.Connection[Any], schema: str, rule: PastRetention, after: int, limit: int
) -> list[tuple[UUID, int]]:
    """The next ``limit`` refused requests past retention after position ``after``."""
    if rule.denial_cutoff is None:
        return []
    query = sql.SQL(
        "SELECT originator_id, notification_id {} AND notification_id > %s "
        "ORDER BY notification_id LIMIT %s"
    )
    rows = conn.execute(
        query.format(_denials_from(schema)), (*_denial_params(rule), after, limit)
    ).fetchall()
    return [_pair(r) for r in rows]


def _tasks_from(schema: str) -> sql.Composed:
    return sql.SQL(_TASKS).format(view=sql.Identifier(schema, TASK_VIEW))


def _denials_from(schema: str) -> sql.Composed:
    return sql.SQL(_DENIALS).format(events=sql.Identifier(schema, EVENTS_TABLE))


def _task_params(rule: PastRetention) -> tuple[Any, ...]:
    return list(rule.cutoffs), list(rule.cutoffs.values()), rule.through


def _denial_params(rule: PastRetention) -> tuple[Any, ...]:
    return rule.through, DENIED_TOPIC, rule.denial_cutoff


def _summary(
    conn: psycopg.Connection[Any], column: str, source: sql.Composed, params: tuple[Any, ...]
) -> tuple[int, int]:
    """How many rows ``source`` holds, and the largest ``column`` among them."""
    row = conn.execute(
        sql.SQL("SELECT count(*), coalesce(max({}), 0) {}").format(sql.SQL(column), source),
        params,
    ).fetchone()
    count, last = _pair(row)
    return int(count), int(last)


def set_head(conn: psycopg.Connection[Any], schema: str, head: ArchiveHead) -> None:
    """Move the archive head forward (never back), in the caller's transaction."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {t} (one, position, chain_hash, archived_at) "
            "VALUES (true, %s, %s, now()) ON CONFLICT (one) DO UPDATE "
            "SET position = excluded.position, chain_hash = excluded.chain_hash, "
            "archived_at = excluded.archived_at WHERE {t}.position < excluded.position"
        ).format(t=sql.Identifier(schema, ARCHIVE_HEAD_TABLE)),
        (head.position, head.chain_hash),
    )


def delete_archived(
    conn: psycopg.Connection[Any], schema: str, through: int, ids: Sequence[UUID]
) -> list[UUID]:
    """Delete the events at or below ``through`` of these aggregates (each only whole, and
    only if it has nothing after ``through``); returns the aggregates removed."""
    function = sql.Identifier(schema, DELETE_FUNCTION)
    removed: list[UUID] = []
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start : start + CHUNK])
        rows = conn.execute(sql.SQL("SELECT * FROM {}(%s, %s)").format(function), (through, chunk))
        removed += [_first(r) for r in rows.fetchall()]
    return removed


def delete_chain_below(conn: psycopg.Connection[Any], schema: str, through: int) -> None:
    """The chain rows at or below ``through``: the archive head carries the chain on."""
    for name in (CHAIN_TABLE, UNDECODABLE_TABLE):
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE position <= %s").format(sql.Identifier(schema, name)),
            (through,),
        )


def delete_live_rows(
    conn: psycopg.Connection[Any], schema: str, through: int, tasks: Sequence[UUID]
) -> None:
    """The rows of removed tasks in the read models and operational tables (attempt rows a
    learn hook has not been handed yet stay: ``delete_held_attempt_rows``)."""
    table = {name: sql.Identifier(schema, name) for name in _BY_TASK}
    held = _learn_hooks_position(conn, schema)
    for start in range(0, len(tasks), CHUNK):
        chunk = list(tasks[start : start + CHUNK])
        conn.execute(
            sql.SQL(
                "DELETE FROM {keys} k USING {view} v WHERE v.task_id = ANY(%s) "
                "AND k.key = v.idempotency_key AND k.task_id = v.task_id"
            ).format(
                keys=sql.Identifier(schema, IDEMPOTENCY_KEYS),
                view=sql.Identifier(schema, TASK_VIEW),
            ),
            (chunk,),
        )
        for name, column in _BY_TASK.items():
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(
                    table[name], sql.Identifier(column)
                ),
                (chunk,),
            )
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE task_id = ANY(%s) AND position <= %s").format(
                sql.Identifier(schema, ROWS)
            ),
            (chunk, min(through, held)),
        )


def delete_held_attempt_rows(conn: psycopg.Connection[Any], schema: str, through: int) -> None:
    """Attempt rows of removed tasks that a learn hook had not been handed when their task
    went, once every hook has them (at or below ``through`` every task with an attempt row
    is in the task view unless it was removed: the task view has read that far)."""
    conn.execute(
        sql.SQL(
            "DELETE FROM {rows} d WHERE d.position <= %s "
            "AND NOT EXISTS (SELECT 1 FROM {view} v WHERE v.task_id = d.task_id)"
        ).format(rows=sql.Identifier(schema, ROWS), view=sql.Identifier(schema, TASK_VIEW)),
        (min(through, _learn_hooks_position(conn, schema)),),
    )


def analyze(conn: psycopg.Connection[Any], schema: str) -> None:
    """Fresh planner statistics for the tables an archival shrank (outside a transaction;
    a role that does not own them is skipped with a notice)."""
    for name in (EVENTS_TABLE, CHAIN_TABLE, ROWS, IDEMPOTENCY_KEYS, *_BY_TASK):
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, name)))


# The tables whose rows of a removed task go, by the column naming the task. A readiness
# edge goes with its dependent (``child``); an edge from a removed dependency to a live
# dependent stays (the readiness graph may still look it up).
_BY_TASK = {
    TASK_VIEW: "task_id",
    NODES: "task_id",
    EDGES: "child",
    DISPATCH_QUEUE: "task_id",
    RUNNING: "task_id",
    TASKS: "task_id",
    DEPTHS: "task_id",
}


def _learn_hooks_position(conn: psycopg.Connection[Any], schema: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT min(position) FROM {} WHERE name LIKE 'learn\\_hooks:%%'").format(
            sql.Identifier(schema, POSITIONS_TABLE)
        )
    ).fetchone()
    value = _first(row) if row else None
    return int(value) if value is not None else 2**62


def _first(row: Any) -> Any:
    return row[0] if isinstance(row, (tuple, list)) else next(iter(row.values()))


def _pair(row: Any) -> tuple[Any, Any]:
    if isinstance(row, (tuple, list)):
        return row[0], row[1]
    values = list(row.values())
    return values[0], values[1]
