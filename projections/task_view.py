"""Task view: one row per task with its current state, attempts, result, error and times.

``apply_batch`` folds a runner's batch into few statements: the updates of one task are
merged in log order (each sets columns to constants, so the last value of a column wins, as
if applied one by one) and tasks that end with the same set of columns are updated by one
``UPDATE ... FROM jsonb_array_elements(...)``; the batch's new rows go first, in one
``INSERT ... FROM json_to_recordset``. Budget-raising retries, whose effect depends on the
row as it is, flush what is gathered and run on their own. A NUL or a NaN in a stored
result or message (which ``jsonb`` refuses; an earlier release stored them) is shown as
``domain/storable.py`` makes it now: U+FFFD, ``"NaN"``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.types.json import Jsonb

from execution_ledger.domain.storable import storable
from execution_ledger.projections.base import Cursor, Event, is_task_event, kind
from execution_ledger.projections.json_rows import NUL_ESCAPE, uuid_array

TABLE = "task_view"

_CREATE = """
CREATE TABLE IF NOT EXISTS {table} (
    task_id uuid PRIMARY KEY,
    type_name text NOT NULL,
    adapter text NOT NULL,
    queue text NOT NULL,
    priority integer NOT NULL,
    lane text,
    state text NOT NULL,
    principal text NOT NULL,
    role text NOT NULL,
    tags text[] NOT NULL,
    args jsonb NOT NULL,
    result jsonb,
    error jsonb,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    worker text,
    timeout_kind text,
    depends_on uuid[] NOT NULL,
    graph_id uuid,
    ref text,
    idempotency_key text,
    timeouts jsonb NOT NULL,
    run_at timestamptz,
    enqueued_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    lease_expires_at timestamptz,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    position bigint NOT NULL
);
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS parent_id uuid;
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS progress double precision;
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS progress_message text;
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS signal_wait_since timestamptz;
CREATE INDEX IF NOT EXISTS task_view_parent_idx ON {table} (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS task_view_state_idx ON {table} (state, queue);
CREATE INDEX IF NOT EXISTS task_view_type_idx ON {table} (type_name, position);
CREATE INDEX IF NOT EXISTS task_view_lane_idx ON {table} (lane) WHERE lane IS NOT NULL;
CREATE INDEX IF NOT EXISTS task_view_enqueued_idx ON {table} (enqueued_at DESC, task_id DESC);
CREATE INDEX IF NOT EXISTS task_view_finished_idx ON {table} (finished_at);
DROP INDEX IF EXISTS {position_index};
"""
# ``task_view_position_idx`` served no query, and every insert and update of the view (a
# task's position moves with each of its events) paid for it: dropped where it exists.

# Per event kind: the columns it sets besides state/version/position/updated_at.
_TERMINAL = {"TaskSucceeded", "TaskFailed", "TaskTimedOut", "TaskCancelled", "TaskSkipped"}
# The type of every column an update may set (the arrays of a merged update are cast to it).
_COLUMN_TYPES = {
    "state": "text",
    "version": "integer",
    "position": "bigint",
    "updated_at": "timestamptz",
    "attempts": "integer",
    "worker": "text",
    "started_at": "timestamptz",
    "finished_at": "timestamptz",
    "lease_expires_at": "timestamptz",
    "result": "jsonb",
    "error": "jsonb",
    "timeout_kind": "text",
    "run_at": "timestamptz",
    "progress": "double precision",
    "progress_message": "text",
    "signal_wait_since": "timestamptz",
    "args": "jsonb",
    "priority": "integer",
    "queue": "text",
}


class TaskView:
    name = "task_view"
    tables = (TABLE,)

    def __init__(self, schema: str) -> None:
        self.table = sql.Identifier(schema, TABLE)
        self._position_index = sql.Identifier(schema, "task_view_position_idx")

    def create(self, cursor: Cursor) -> None:
        cursor.execute(
            sql.SQL(_CREATE).format(table=self.table, position_index=self._position_index)
        )

    def apply(self, cursor: Cursor, event: Event, position: int) -> list[Any]:
        if not is_task_event(event):
            return []
        name = kind(event)
        if name == "TaskEnqueued":
            self._insert(cursor, event, position)
        else:
            self._update(cursor, event, position, name)
        return []

    def apply_batch(self, cursor: Cursor, events: Iterable[tuple[Event, int]]) -> list[Any]:
        """Apply ``(event, position)`` pairs in log order, with few statements."""
        merged: dict[UUID, dict[str, Any]] = {}
        inserts: list[tuple[Event, int]] = []
        for event, position in events:
            if not is_task_event(event):
                continue
            name = kind(event)
            if name == "TaskEnqueued":  # inserted before the batch's updates (of any task)
                inserts.append((event, position))
                continue
            # attr-defined: a TaskRetryScheduled (known by its name) has ``manual``.
            if name == "TaskRetryScheduled" and event.manual:  # type: ignore[attr-defined]
                self._flush(cursor, inserts, merged)
                self.apply(cursor, event, position)
                continue
            columns = merged.setdefault(event.originator_id, {})
            columns.update(_row_changes(event, position, name))
        self._flush(cursor, inserts, merged)
        return []

    def _flush(
        self,
        cursor: Cursor,
        inserts: list[tuple[Event, int]],
        merged: dict[UUID, dict[str, Any]],
    ) -> None:
        """The new rows (one INSERT), then one UPDATE per distinct set of columns among the
        merged rows (a task's updates follow its insert)."""
        self._insert_all(cursor, inserts)
        inserts.clear()
        shapes: dict[tuple[str, ...], list[tuple[UUID, dict[str, Any]]]] = {}
        for task_id, columns in merged.items():
            shapes.setdefault(tuple(sorted(columns)), []).append((task_id, columns))
        for shape, rows in shapes.items():
            try:
                values = [[str(i), *(_json_value(row[c]) for c in shape)] for i, row in rows]
                text: str | None = json.dumps(values, allow_nan=False)
            except ValueError:
                text = None
            if text is None or NUL_ESCAPE in text:
                # A NUL or a NaN, which jsonb refuses, stored before outcomes were made
                # storable (``domain/storable.py``): shown as that makes them.
                values = [
                    [str(i), *(_json_value(_storable_column(row[c])) for c in shape)]
                    for i, row in rows
                ]
                text = json.dumps(values, allow_nan=False)
            ids = uuid_array(task_id for task_id, _ in rows)
            cursor.execute(self._json_update_query(shape), (text, ids))
        merged.clear()

    @functools.cache  # noqa: B019 - a handful of shapes per projection object, kept for its life
    def _json_update_query(self, columns: tuple[str, ...]) -> str:
        """``UPDATE ... FROM jsonb_array_elements(rows)`` for one set of columns: each row a
        JSON array ``[task_id, value, ...]`` of texts cast on the server (``_json_value``),
        one string psycopg sends as it is, where arrays are dumped value by value in Python
        (``jsonb``: parsed once, where ``->>`` on a ``json`` element parses it again).
        The ids again as a ``uuid[]`` (``= ANY``) let the planner find the rows by the key:
        it guesses 100 rows for the JSON function and, in a table of some thousands of
        rows, hash-joined a full scan instead (50 rows of 10,000: 1.75 ms, now 0.71)."""
        return (
            sql.SQL(
                "UPDATE {} AS t SET {} FROM (SELECT (r ->> 0)::uuid AS task_id, {} "
                "FROM jsonb_array_elements(%s::jsonb) AS r) AS u "
                "WHERE t.task_id = u.task_id AND t.task_id = ANY(%s::uuid[])"
            )
            .format(
                self.table,
                sql.SQL(", ").join(
                    sql.SQL("{} = u.{}").format(sql.Identifier(c), sql.Identifier(c))
                    for c in columns
                ),
                sql.SQL(", ").join(
                    sql.SQL("(r ->> {})::{} AS {}").format(
                        sql.Literal(i), sql.SQL(_COLUMN_TYPES[c]), sql.Identifier(c)
                    )
                    for i, c in enumerate(columns, start=1)
                ),
            )
            .as_string(None)
        )

    def _insert_all(self, cursor: Cursor, inserts: list[tuple[Event, int]]) -> None:
        """The rows of enqueued tasks in one statement: their values as one JSON text the
        server unpacks (per-row statements cost the projection ~0.2 ms of Python each).
        Values JSON cannot carry (a NaN in the args) go row by row, as they always did."""
        if len(inserts) < 2:
            for event, position in inserts:
                self._insert(cursor, event, position)
            return
        try:
            rows = json.dumps(
                [_insert_row(e, p) for e, p in inserts], allow_nan=False, separators=(",", ":")
            )
        except (TypeError, ValueError):
            for event, position in inserts:
                self._insert(cursor, event, position)
            return
        cursor.execute(self._insert_json_query, (rows,))

    @functools.cached_property
    def _insert_json_query(self) -> str:
        columns = ", ".join(name for name, _ in _INSERT_COLUMNS)
        types = ", ".join(f"{name} {kind}" for name, kind in _INSERT_COLUMNS)
        # A new row's ``updated_at`` is its ``enqueued_at``: sent once.
        values = ", ".join(
            "enqueued_at" if name == "updated_at" else name for name, _ in _INSERT_COLUMNS
        )
        return (
            sql.SQL(
                f"INSERT INTO {{}} ({columns}) SELECT {values} "
                f"FROM json_to_recordset(%s::json) AS r({types})"
            )
            .format(self.table)
            .as_string(None)
        )

    def _insert(self, cursor: Cursor, event: Any, position: int) -> None:
        cursor.execute(
            sql.SQL(
                "INSERT INTO {} (task_id, type_name, adapter, queue, priority, lane, state, "
                "principal, role, tags, args, max_attempts, depends_on, graph_id, ref, "
                "idempotency_key, timeouts, run_at, enqueued_at, updated_at, version, position, "
                "parent_id, signal_wait_since) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, %s, %s, %s, %s, %s, %s)"
            ).format(self.table),
            (
                event.originator_id,
                event.type_name,
                event.adapter,
                event.queue,
                event.priority,
                event.lane,
                event.initial_state,
                event.principal,
                event.role,
                list(event.tags),
                Jsonb(event.args),
                int(event.retry.get("max_attempts", 1)),
                list(event.depends_on),
                event.graph_id,
                event.ref,
                event.idempotency_key,
                Jsonb(event.timeouts),
                event.run_at,
                event.timestamp,
                event.timestamp,
                event.originator_version,
                position,
                event.parent_id,
                event.timestamp if event.initial_state == "waiting" else None,
            ),
        )

    def _update(self, cursor: Cursor, event: Any, position: int, name: str) -> None:
        state, columns = _changes(event, name)
        if name in _TERMINAL:
            columns["finished_at"] = event.timestamp
        raise_budget = name == "TaskRetryScheduled" and event.manual
        query = self._update_query(tuple(columns), raise_budget)
        cursor.execute(
            query,
            (
                state,
                event.originator_version,
                position,
                event.timestamp,
                *columns.values(),
                event.originator_id,
            ),
        )

    @functools.cache  # noqa: B019 - a handful of shapes per projection object, kept for its life
    def _update_query(self, columns: tuple[str, ...], raise_budget: bool) -> str:
        """The UPDATE statement for one set of columns, composed once."""
        assignments: list[sql.Composable] = [
            sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns
        ]
        if raise_budget:
            assignments.append(sql.SQL("max_attempts = greatest(max_attempts, attempts + 1)"))
        return (
            sql.SQL(
                "UPDATE {} SET state = %s, version = %s, position = %s, updated_at = %s{} "
                "WHERE task_id = %s"
            )
            .format(self.table, sql.SQL("").join(sql.SQL(", ") + a for a in assignments))
            .as_string(None)
        )


def _json_value(value: Any) -> Any:
    """A column's value in the JSON text of a bulk update, as the text its cast reads:
    a ``Jsonb`` as its JSON text (so a JSON ``null`` result stays one, where a plain None is
    SQL NULL), a time in ISO 8601; numbers and strings as they are."""
    if isinstance(value, Jsonb):
        return json.dumps(value.obj, allow_nan=False)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _storable_column(value: Any) -> Any:
    """A column's value without NUL, which ``jsonb`` and ``text`` refuse (``storable``)."""
    if isinstance(value, Jsonb):
        return Jsonb(storable(value.obj))
    return storable(value)


def _row_changes(event: Any, position: int, name: str) -> dict[str, Any]:
    """Every column one (non-enqueue, non-manual-retry) event sets, by name."""
    state, columns = _changes(event, name)
    row = {"state": state, "version": event.originator_version, "position": position}
    row["updated_at"] = event.timestamp
    row.update(columns)
    if name in _TERMINAL:
        row["finished_at"] = event.timestamp
    return row


def _changes(event: Any, name: str) -> tuple[str, dict[str, Any]]:
    """The new state and the other columns one event sets."""
    if name == "TaskUnblocked":
        if event.state == "waiting":  # for the signals its type needs
            return event.state, {"signal_wait_since": event.timestamp}
        return event.state, {}
    if name == "TaskStarted":
        return "running", {
            "attempts": event.attempt,
            "worker": event.worker,
            "started_at": event.timestamp,
            "lease_expires_at": event.lease_expires_at,
            "finished_at": None,
            "error": None,
            "progress": None,
            "progress_message": None,
        }
    if name == "TaskHeartbeat":
        if event.progress is None and event.message is None:
            return "running", {"lease_expires_at": event.lease_expires_at}
        return "running", {
            "lease_expires_at": event.lease_expires_at,
            "progress": event.progress,
            "progress_message": event.message,
        }
    if name == "TaskSignalled":
        return event.state, ({} if event.state == "waiting" else {"signal_wait_since": None})
    if name == "TaskAwaitingSignals":
        return event.state, {"signal_wait_since": event.timestamp, "lease_expires_at": None}
    if name == "TaskChildrenSpawned":
        return event.state, {"lease_expires_at": None}
    if name == "TaskChildEnded":
        return event.state, {}
    if name == "TaskSucceeded":
        return "succeeded", {"result": Jsonb(event.result), "error": None, "lease_expires_at": None}
    if name == "TaskFailed":
        error = {"class": event.error_class, "message": event.message, "retryable": event.retryable}
        return "failed", {"error": Jsonb(error), "lease_expires_at": None}
    if name == "TaskTimedOut":
        error = {"class": "Timeout", "message": f"{event.kind} timeout", "retryable": True}
        return "failed", {
            "error": Jsonb(error),
            "timeout_kind": event.kind,
            "lease_expires_at": None,
        }
    if name == "TaskRetryScheduled":
        return "scheduled", {"run_at": event.retry_at, "timeout_kind": None, "finished_at": None}
    if name == "TaskDebounced":  # a coalesced submission: a later start, maybe its args
        if event.replaces_args:
            return event.state, {"run_at": event.run_at, "args": Jsonb(event.args)}
        return event.state, {"run_at": event.run_at}
    if name == "TaskCancelled":
        error = {"class": "Cancelled", "message": event.reason or "cancelled", "by": event.by}
        return "cancelled", {"error": Jsonb(error), "lease_expires_at": None}
    if name == "TaskSkipped":
        error = {"class": "Skipped", "message": event.reason, "dependency": str(event.dependency)}
        return "skipped", {"error": Jsonb(error)}
    if name == "TaskReprioritised":
        return event.state, {"priority": event.priority}
    if name == "TaskMoved":
        return event.state, {"queue": event.queue}
    raise ValueError(f"the task view does not know the event {name}")


# The columns of a new row, with their types, in ``json_to_recordset``'s terms.
_INSERT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("task_id", "uuid"),
    ("type_name", "text"),
    ("adapter", "text"),
    ("queue", "text"),
    ("priority", "integer"),
    ("lane", "text"),
    ("state", "text"),
    ("principal", "text"),
    ("role", "text"),
    ("tags", "text[]"),
    ("args", "jsonb"),
    ("max_attempts", "integer"),
    ("depends_on", "uuid[]"),
    ("graph_id", "uuid"),
    ("ref", "text"),
    ("idempotency_key", "text"),
    ("timeouts", "jsonb"),
    ("run_at", "timestamptz"),
    ("enqueued_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("version", "integer"),
    ("position", "bigint"),
    ("parent_id", "uuid"),
    ("signal_wait_since", "timestamptz"),
)


def _insert_row(event: Any, position: int) -> dict[str, Any]:
    """A ``TaskEnqueued`` as the JSON object of its new row (``_INSERT_COLUMNS``), without
    the columns that are null (``json_to_recordset`` gives null for a missing key) and
    without ``updated_at`` (the query takes ``enqueued_at``): most of a plain task's
    columns are null, and the server parses every byte of the batch's text."""
    at = event.timestamp.isoformat()
    row = {
        "task_id": str(event.originator_id),
        "type_name": event.type_name,
        "adapter": event.adapter,
        "queue": event.queue,
        "priority": event.priority,
        "lane": event.lane,
        "state": event.initial_state,
        "principal": event.principal,
        "role": event.role,
        "tags": list(event.tags),
        "args": event.args,
        "max_attempts": int(event.retry.get("max_attempts", 1)),
        "depends_on": [str(d) for d in event.depends_on],
        "graph_id": None if event.graph_id is None else str(event.graph_id),
        "ref": event.ref,
        "idempotency_key": event.idempotency_key,
        "timeouts": event.timeouts,
        "run_at": None if event.run_at is None else event.run_at.isoformat(),
        "enqueued_at": at,
        "version": event.originator_version,
        "position": position,
        "parent_id": None if event.parent_id is None else str(event.parent_id),
        "signal_wait_since": at if event.initial_state == "waiting" else None,
    }
    return {column: value for column, value in row.items() if value is not None}
