"""Queries of the read models (task view, readiness graph, learning dataset, operational
tables), shared by the CLI and the HTTP API.

The lists and counts may lag: they read from the replica when one is configured and close
enough (``read_replica.lag_tolerant_read``). One task's row, its graph and the projection
positions are read from the primary."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Cursor, sql
from psycopg.rows import DictRow

from execution_ledger.adapters.postgres import rate_limits
from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.read_replica import lag_tolerant_read, lag_tolerant_rows
from execution_ledger.domain.errors import InvalidQuery, TaskNotFound
from execution_ledger.domain.learning import suggest_start_to_close

MAX_PAGE = 500


@dataclass(frozen=True)
class TaskFilter:
    state: str | None = None
    type_name: str | None = None
    queue: str | None = None
    lane: str | None = None
    tag: str | None = None
    since: datetime | None = None  # enqueued at or after
    until: datetime | None = None  # enqueued before
    text: str | None = None  # a substring of the args or the error (case-insensitive)


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
    params: list[Any] = []
    conditions = filter_conditions(where, params)
    if cursor is not None:
        enqueued_at, task_id = _decode_cursor(cursor)
        conditions.append(sql.SQL("(enqueued_at, task_id) < (%s, %s)"))
        params.extend([enqueued_at, task_id])
    query = sql.SQL("SELECT * FROM {} {} ORDER BY enqueued_at DESC, task_id DESC LIMIT %s").format(
        sql.Identifier(store.schema, "task_view"),
        sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL(""),
    )

    def read(cur: Cursor[DictRow]) -> list[dict[str, Any]]:
        rows = cur.execute(query, (*params, limit + 1)).fetchall()
        rate_limits.with_holds(cur, store.schema, rows[:limit])
        return rows

    rows = lag_tolerant_read(store, read)
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return Page(rows=rows[:limit], next_cursor=next_cursor)


def filter_conditions(where: TaskFilter, params: list[Any]) -> list[sql.Composable]:
    """The conditions on task view rows of a task filter (appending their parameters)."""
    conditions: list[sql.Composable] = []
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
    conditions.extend(_time_and_text(where, params))
    return conditions


def _time_and_text(where: TaskFilter, params: list[Any]) -> list[sql.Composable]:
    """The enqueue-time range and the text search of a task filter (appending their
    parameters)."""
    conditions: list[sql.Composable] = []
    if where.since is not None:
        conditions.append(sql.SQL("enqueued_at >= %s"))
        params.append(where.since)
    if where.until is not None:
        conditions.append(sql.SQL("enqueued_at < %s"))
        params.append(where.until)
    if where.text:
        escaped = where.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        conditions.append(sql.SQL("(args::text ILIKE %s OR coalesce(error::text, '') ILIKE %s)"))
        params.extend([pattern, pattern])
    return conditions


def get_task_row(store: EventStore, task_id: UUID) -> dict[str, Any]:
    query = sql.SQL("SELECT * FROM {} WHERE task_id = %s").format(
        sql.Identifier(store.schema, "task_view")
    )
    with store.transaction() as cur:
        row = cur.execute(query, (task_id,)).fetchone()
        if row is not None:
            rate_limits.with_holds(cur, store.schema, [row])
    if row is None:
        raise TaskNotFound(f"no task {task_id}")
    return row


def rate_limit_hold(store: EventStore, task_id: UUID) -> str | None:
    """Why a task waiting to start is held back by a rate limit, if it is."""
    with store.transaction() as cur:
        return rate_limits.holds_of(cur, store.schema, [task_id]).get(task_id)


def ready_tasks(store: EventStore, queue: str, limit: int = 100) -> list[dict[str, Any]]:
    """The ready set of a queue, in dispatch order (priority first, then enqueue order)."""
    query = sql.SQL(
        "SELECT task_id, queue, priority, lane, state, depth, run_at FROM {} "
        "WHERE queue = %s AND (state = 'ready' OR (state = 'scheduled' AND run_at <= now())) "
        "ORDER BY priority DESC, enqueued_position LIMIT %s"
    ).format(sql.Identifier(store.schema, "readiness_nodes"))
    return lag_tolerant_rows(store, query, (queue, limit))


def _encode_cursor(row: dict[str, Any]) -> str:
    text = f"{row['enqueued_at'].isoformat()}|{row['task_id']}"
    return base64.urlsafe_b64encode(text.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        stamp, task_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(stamp), UUID(task_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidQuery(f"invalid cursor {cursor!r}") from None


# -- read models for the HTTP API (graph, queues, workers, statistics, metrics) ----------

MAX_GRAPH_NODES = 10_000


@dataclass(frozen=True)
class TaskGraph:
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    truncated: bool


def task_graph(store: EventStore, task_id: UUID, max_nodes: int = MAX_GRAPH_NODES) -> TaskGraph:
    """The connected DAG around ``task_id`` (dependencies and dependents, transitively), from
    the readiness graph; at most ``max_nodes`` nodes. Cost: the nodes and edges visited."""
    nodes_table = sql.Identifier(store.schema, "readiness_nodes")
    edges_table = sql.Identifier(store.schema, "readiness_edges")
    component = sql.SQL(
        "WITH RECURSIVE component(task_id) AS ("
        " SELECT %s::uuid"
        " UNION"
        " SELECT n.task_id FROM component c, LATERAL ("
        "  SELECT child AS task_id FROM {edges} WHERE parent = c.task_id"
        "  UNION ALL SELECT parent FROM {edges} WHERE child = c.task_id) n"
        ") SELECT task_id FROM component LIMIT %s"
    ).format(edges=edges_table)
    with store.transaction() as cur:
        ids = [row["task_id"] for row in cur.execute(component, (task_id, max_nodes + 1))]
        truncated = len(ids) > max_nodes
        ids = ids[:max_nodes]
        nodes = cur.execute(
            sql.SQL(
                "SELECT n.task_id, v.type_name, v.ref, n.state, n.queue, n.lane, n.priority, "
                "n.depth, n.pending, n.graph_id FROM {} n LEFT JOIN {} v USING (task_id) "
                "WHERE n.task_id = ANY(%s) ORDER BY n.depth, n.enqueued_position"
            ).format(nodes_table, sql.Identifier(store.schema, "task_view")),
            (ids,),
        ).fetchall()
        edges = cur.execute(
            sql.SQL(
                "SELECT parent, child FROM {} WHERE parent = ANY(%s) AND child = ANY(%s) "
                "ORDER BY parent, child"
            ).format(edges_table),
            (ids, ids),
        ).fetchall()
    return TaskGraph(nodes=nodes, edges=edges, truncated=truncated)


def queue_counts(store: EventStore) -> dict[str, dict[str, Any]]:
    """Per queue: tasks ready to start now, tasks scheduled for later, attempts running,
    and the paused flag (queues with no task and no flag are left out)."""
    schema = store.schema

    def read(cur: Cursor[DictRow]) -> dict[str, dict[str, Any]]:
        counts: dict[str, dict[str, Any]] = {}

        def entry(queue: str) -> dict[str, Any]:
            return counts.setdefault(
                queue, {"ready": 0, "scheduled": 0, "running": 0, "paused": False}
            )

        for row in cur.execute(
            sql.SQL(
                "SELECT queue, "
                "count(*) FILTER (WHERE state = 'ready' OR run_at <= now()) AS ready, "
                "count(*) FILTER (WHERE state = 'scheduled' AND run_at > now()) AS scheduled "
                "FROM {} WHERE state IN ('ready', 'scheduled') GROUP BY queue"
            ).format(sql.Identifier(schema, "readiness_nodes"))
        ):
            entry(row["queue"]).update(ready=row["ready"], scheduled=row["scheduled"])
        for row in cur.execute(
            sql.SQL("SELECT queue, count(*) AS running FROM {} GROUP BY queue").format(
                sql.Identifier(schema, "running_attempts")
            )
        ):
            entry(row["queue"])["running"] = row["running"]
        for row in cur.execute(
            sql.SQL("SELECT queue, paused FROM {}").format(sql.Identifier(schema, "queue_flags"))
        ):
            entry(row["queue"])["paused"] = row["paused"]
        return counts

    return lag_tolerant_read(store, read)


def worker_nodes(store: EventStore, limit: int = MAX_PAGE) -> list[dict[str, Any]]:
    """Worker nodes, most recently seen first, each with its running attempts."""

    def read(cur: Cursor[DictRow]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        workers = cur.execute(
            sql.SQL(
                "SELECT worker, host, pid, queues, concurrency, started_at, last_seen, "
                "extract(epoch FROM now() - last_seen)::float8 AS seconds_since_seen, "
                "registry_version "
                "FROM {} ORDER BY last_seen DESC, worker LIMIT %s"
            ).format(sql.Identifier(store.schema, "worker_nodes")),
            (limit,),
        ).fetchall()
        running = cur.execute(
            sql.SQL(
                "SELECT task_id, attempt, queue, lane, worker, started_at, lease_expires_at "
                "FROM {} WHERE worker = ANY(%s) ORDER BY started_at, task_id"
            ).format(sql.Identifier(store.schema, "running_attempts")),
            ([w["worker"] for w in workers],),
        ).fetchall()
        return workers, running

    workers, running = lag_tolerant_read(store, read)
    by_worker: dict[str, list[dict[str, Any]]] = {w["worker"]: [] for w in workers}
    for attempt in running:
        by_worker[attempt.pop("worker")].append(attempt)
    return [{**w, "running": by_worker[w["worker"]]} for w in workers]


def task_type_statistics(store: EventStore, type_name: str) -> dict[str, Any]:
    """What history says of one type: its tasks per state (task view), and from the learning
    dataset its attempts per outcome, success and timeout rates, run-time percentiles of
    successful attempts and a suggested start_to_close."""

    def read(cur: Cursor[DictRow]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
        states = cur.execute(
            sql.SQL(
                "SELECT state, count(*) AS n FROM {} WHERE type_name = %s GROUP BY state"
            ).format(sql.Identifier(store.schema, "task_view")),
            (type_name,),
        ).fetchall()
        outcomes = cur.execute(
            sql.SQL(
                "SELECT outcome, count(*) AS n FROM {} WHERE task_type = %s GROUP BY outcome"
            ).format(sql.Identifier(store.schema, "attempt_dataset")),
            (type_name,),
        ).fetchall()
        runs = cur.execute(
            sql.SQL(
                "SELECT count(*) AS n, avg(run_s) AS mean, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY run_s) AS p50, "
                "percentile_cont(0.95) WITHIN GROUP (ORDER BY run_s) AS p95, "
                "percentile_cont(0.99) WITHIN GROUP (ORDER BY run_s) AS p99, max(run_s) AS max "
                "FROM {} WHERE task_type = %s AND outcome = 'succeeded'"
            ).format(sql.Identifier(store.schema, "attempt_dataset")),
            (type_name,),
        ).fetchone()
        return states, outcomes, runs

    states, outcomes, runs = lag_tolerant_read(store, read)
    assert runs is not None
    by_state = {row["state"]: row["n"] for row in states}
    by_outcome = {row["outcome"]: row["n"] for row in outcomes}
    attempts = sum(by_outcome.values())
    return {
        "tasks": sum(by_state.values()),
        "by_state": by_state,
        "attempts": attempts,
        "by_outcome": by_outcome,
        "success_rate": by_outcome.get("succeeded", 0) / attempts if attempts else None,
        "timeout_rate": by_outcome.get("timed_out", 0) / attempts if attempts else None,
        "run_seconds": {key: runs[key] for key in ("mean", "p50", "p95", "p99", "max")}
        | {"count": runs["n"]},
        "suggested_start_to_close": suggest_start_to_close(runs["n"], runs["p99"]),
    }


def task_counts(store: EventStore) -> list[dict[str, Any]]:
    """Tasks per queue, type and state (a scan of the task view)."""
    query = sql.SQL(
        "SELECT queue, type_name, state, count(*) AS n FROM {} "
        "GROUP BY queue, type_name, state ORDER BY queue, type_name, state"
    ).format(sql.Identifier(store.schema, "task_view"))
    return lag_tolerant_rows(store, query)


TASK_DURATIONS = {
    "queue_wait": ("started_at", "enqueued_at"),
    "run": ("finished_at", "started_at"),
    "latency": ("finished_at", "enqueued_at"),
}


def task_duration_buckets(store: EventStore, buckets: list[float]) -> list[dict[str, Any]]:
    """Cumulative histograms of finished tasks per queue and type (a scan of the task view):
    rows of queue, type_name, measure (``queue_wait``: enqueue to last start; ``run``: last
    attempt; ``latency``: enqueue to finish), ``le`` (counts per bucket), ``sum``, ``count``."""
    table = sql.Identifier(store.schema, "task_view")
    selects = []
    params: list[Any] = []
    for measure, (end, start) in TASK_DURATIONS.items():
        columns = sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE d <= %s)") for _ in buckets)
        selects.append(
            sql.SQL(
                "SELECT queue, type_name, %s AS measure, ARRAY[{columns}]::bigint[] AS le, "
                "coalesce(sum(d), 0)::float8 AS sum, count(*) AS count FROM ("
                "SELECT queue, type_name, extract(epoch FROM {end} - {start})::float8 AS d "
                "FROM {table} WHERE state IN ('succeeded', 'failed') AND {end} IS NOT NULL "
                "AND {start} IS NOT NULL) durations GROUP BY queue, type_name"
            ).format(
                columns=columns,
                end=sql.Identifier(end),
                start=sql.Identifier(start),
                table=table,
            )
        )
        params.extend([measure, *buckets])
    query = sql.SQL(" UNION ALL ").join(selects)
    return lag_tolerant_rows(store, query, params)


def projection_positions(store: EventStore) -> dict[str, int]:
    """How far each projection has read the log."""
    with store.transaction() as cur:
        rows = cur.execute(
            sql.SQL("SELECT name, position FROM {}").format(
                sql.Identifier(store.schema, "projection_positions")
            )
        ).fetchall()
    return {row["name"]: int(row["position"]) for row in rows}


MAX_ACTIVITY_MINUTES = 24 * 60


def finished_per_minute(store: EventStore, minutes: int) -> list[dict[str, Any]]:
    """Tasks that ended in each of the last ``minutes`` minutes, by final state (from the
    task view's ``finished_at``, through its index): one row per minute, oldest first,
    minutes with nothing finished included."""
    if not 1 <= minutes <= MAX_ACTIVITY_MINUTES:
        raise InvalidQuery(f"minutes must be between 1 and {MAX_ACTIVITY_MINUTES}")
    query = sql.SQL(
        "WITH bounds AS (SELECT date_trunc('minute', now()) AS last_minute), "
        "minutes AS (SELECT generate_series(last_minute - make_interval(mins => %s - 1), "
        "last_minute, interval '1 minute') AS minute FROM bounds), "
        "ended AS (SELECT date_trunc('minute', finished_at) AS minute, state FROM {} "
        "WHERE finished_at >= (SELECT min(minute) FROM minutes)) "
        "SELECT m.minute, "
        "count(e.state) FILTER (WHERE e.state = 'succeeded') AS succeeded, "
        "count(e.state) FILTER (WHERE e.state = 'failed') AS failed, "
        "count(e.state) FILTER (WHERE e.state NOT IN ('succeeded', 'failed')) AS other "
        "FROM minutes m LEFT JOIN ended e USING (minute) GROUP BY m.minute ORDER BY m.minute"
    ).format(sql.Identifier(store.schema, "task_view"))
    return lag_tolerant_rows(store, query, (minutes,))
