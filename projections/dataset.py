"""Learning dataset: one row per finished attempt, folded from the log by ``AttemptFold``.

``AttemptFold`` is pure: it takes task events in log order (as ``EventFacts``) and returns
the row of the attempt an event ends (or None). It keeps per-task facts (type, queue,
times, sizes, depth, the running attempt) in a ``FoldState``: in memory for a replay
(``MemoryFoldState``), in tables for the live projection (``DatasetProjection``, through
``TableFoldState``). Both run the same fold, so the table and a replay cannot disagree.

Rows use event timestamps only (never the clock), so a replay to the same bound gives the
same rows. See docs/dataset.md for every column and rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, UUIDAsHex
from psycopg import sql

from projections.base import Cursor, Event, is_task_event, kind

ROWS = "attempt_dataset"
TASKS = "attempt_dataset_tasks"
DEPTHS = "attempt_dataset_depths"


class EventFacts(NamedTuple):
    """What the fold reads of one task event, flat: fields an event does not have are None.

    Two sources make them and must agree: ``event_facts`` from a domain event (the live
    projection) and the replay's SQL, which reads them straight from the stored JSON
    (``adapters/dataset/log_reader.py``). Sizes are bytes of the value as stored: the
    library's compact UTF-8 JSON.
    """

    position: int
    name: str  # the event's short name, e.g. TaskStarted
    task_id: UUID
    timestamp: datetime
    type_name: str | None = None  # TaskEnqueued
    adapter: str | None = None
    queue: str | None = None
    lane: str | None = None
    principal: str | None = None
    role: str | None = None
    initial_state: str | None = None
    run_at: datetime | None = None
    depends_on: list[UUID] | None = None
    args_bytes: int | None = None
    attempt: int | None = None  # TaskStarted, TaskSucceeded, TaskFailed, TaskTimedOut
    worker: str | None = None  # TaskStarted
    error_class: str | None = None  # TaskFailed
    timeout_kind: str | None = None  # TaskTimedOut
    retry_at: datetime | None = None  # TaskRetryScheduled
    result_bytes: int | None = None  # TaskSucceeded
    exit_code: int | None = None  # TaskSucceeded, TaskFailed (from details)
    http_status: int | None = None


class AttemptRow(NamedTuple):
    """One finished attempt; the field order is the column order of every export."""

    position: int  # log position of the event that ended the attempt
    task_id: UUID
    attempt: int
    task_type: str
    adapter: str
    queue: str
    lane: str | None
    principal: str
    role: str
    node: str
    enqueued_at: datetime
    ready_at: datetime | None
    started_at: datetime
    finished_at: datetime
    queue_wait_s: float | None
    run_s: float
    outcome: str  # succeeded | failed | timed_out | cancelled
    error_class: str | None
    timeout_kind: str | None
    exit_code: int | None
    http_status: int | None
    args_bytes: int
    result_bytes: int | None
    dependencies: int
    dag_depth: int


COLUMNS: tuple[str, ...] = AttemptRow._fields


@dataclass(slots=True)
class TaskFacts:
    """What the fold must remember about a task between its events."""

    task_type: str
    adapter: str
    queue: str
    lane: str | None
    principal: str
    role: str
    enqueued_at: datetime
    ready_at: datetime | None
    run_at: datetime | None
    args_bytes: int
    dependencies: int
    dag_depth: int
    attempt: int = 0
    started_at: datetime | None = None  # set while an attempt runs
    node: str | None = None


FACT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TaskFacts))


class FoldState(Protocol):
    """Where ``AttemptFold`` keeps per-task facts and DAG depths."""

    def get(self, task_id: UUID) -> TaskFacts | None: ...

    def put(self, task_id: UUID, facts: TaskFacts) -> None:
        """Record new or changed facts."""

    def drop(self, task_id: UUID) -> None:
        """Forget a task that can have no further attempt."""

    def max_depth(self, task_ids: Sequence[UUID]) -> int:
        """The deepest DAG depth among ``task_ids`` (0 for a task with no dependency)."""

    def set_depth(self, task_id: UUID, depth: int) -> None:
        """Remember a depth of 1 or more (absent means 0)."""


class MemoryFoldState:
    """Facts in dicts: unfinished tasks, tasks a retry may revive, depths of 1 or more."""

    def __init__(self) -> None:
        self.facts: dict[UUID, TaskFacts] = {}
        self.depths: dict[UUID, int] = {}

    def get(self, task_id: UUID) -> TaskFacts | None:
        return self.facts.get(task_id)

    def put(self, task_id: UUID, facts: TaskFacts) -> None:
        self.facts[task_id] = facts

    def drop(self, task_id: UUID) -> None:
        self.facts.pop(task_id, None)

    def max_depth(self, task_ids: Sequence[UUID]) -> int:
        depths = self.depths
        return max((depths.get(t, 0) for t in task_ids), default=0)

    def set_depth(self, task_id: UUID, depth: int) -> None:
        self.depths[task_id] = depth


# -- facts of a domain event ----------------------------------------------------------------

_MICROSECOND = timedelta(microseconds=1)
_LARGEST_CODE = 10**18  # exit codes and statuses past this are not kept (nor by the SQL)


def _library_transcoder() -> JSONTranscoder:
    """The event store's JSON encoding (the library's default transcodings)."""
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DecimalAsStr())
    transcoder.register(DatetimeAsISO())
    return transcoder


_encode = _library_transcoder().encode


def stored_size(value: Any) -> int:
    """Bytes of ``value`` as the event store writes it (compact UTF-8 JSON)."""
    return len(_encode(value))


def _code(details: Mapping[str, Any] | None, key: str) -> int | None:
    value = (details or {}).get(key)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < _LARGEST_CODE:
        return value
    return None


def event_facts(event: Event, position: int) -> EventFacts | None:
    """The fold's view of a domain event; None for events of other aggregates."""
    if not is_task_event(event):
        return None
    name = kind(event)
    e: Any = event
    base = (position, name, e.originator_id, e.timestamp)
    if name == "TaskEnqueued":
        return EventFacts(
            *base,
            type_name=e.type_name,
            adapter=e.adapter,
            queue=e.queue,
            lane=e.lane,
            principal=e.principal,
            role=e.role,
            initial_state=e.initial_state,
            run_at=e.run_at,
            depends_on=list(e.depends_on),
            args_bytes=stored_size(e.args),
        )
    if name == "TaskStarted":
        return EventFacts(*base, attempt=e.attempt, worker=e.worker)
    if name == "TaskSucceeded":
        return EventFacts(
            *base,
            attempt=e.attempt,
            result_bytes=stored_size(e.result),
            exit_code=_code(e.details, "exit_code"),
            http_status=_code(e.details, "http_status"),
        )
    if name == "TaskFailed":
        return EventFacts(
            *base,
            attempt=e.attempt,
            error_class=e.error_class,
            exit_code=_code(e.details, "exit_code"),
            http_status=_code(e.details, "http_status"),
        )
    if name == "TaskTimedOut":
        return EventFacts(*base, attempt=e.attempt, timeout_kind=e.kind)
    if name == "TaskRetryScheduled":
        return EventFacts(*base, retry_at=e.retry_at)
    return EventFacts(*base)


def seconds_between(start: datetime, end: datetime) -> float:
    """``end - start`` in seconds, exact to the microsecond (no float drift)."""
    return ((end - start) // _MICROSECOND) / 1_000_000


Between = Callable[[Any, Any], float]


# -- the fold ---------------------------------------------------------------------------------


class AttemptFold:
    """Events in log order in, finished attempt rows out (at most one per event).

    Task ids and times pass through the fold as they come: it only compares times (``>``)
    and measures them with ``between``. The projection gives UUIDs and datetimes; a replay
    gives text (``adapters/dataset/log_reader.py``: ids as text, times as UTC ISO text with
    microseconds, which compare in time order, and ``iso_seconds_between``). Each kind of
    event has its method, with only what the fold reads of it; ``apply`` takes ``EventFacts``.
    """

    def __init__(self, state: FoldState | None = None, between: Between = seconds_between) -> None:
        self.state: FoldState = state if state is not None else MemoryFoldState()
        self.between = between

    def apply_event(self, event: Event, position: int) -> AttemptRow | None:
        facts = event_facts(event, position)
        return None if facts is None else self.apply(facts)

    def apply(self, event: EventFacts) -> AttemptRow | None:
        name, task_id, timestamp = event.name, event.task_id, event.timestamp
        if name == "TaskEnqueued":
            self.enqueued(
                task_id,
                timestamp,
                event.type_name,
                event.adapter,
                event.queue,
                event.lane,
                event.principal,
                event.role,
                event.initial_state,
                event.run_at,
                event.depends_on or [],
                event.args_bytes or 0,
            )
        elif name == "TaskUnblocked":
            self.unblocked(task_id, timestamp)
        elif name == "TaskStarted":
            self.started(task_id, timestamp, event.attempt or 0, event.worker)
        elif name == "TaskSucceeded":
            return self.succeeded(
                event.position,
                task_id,
                timestamp,
                event.result_bytes,
                event.exit_code,
                event.http_status,
            )
        elif name == "TaskFailed":
            return self.failed(
                event.position,
                task_id,
                timestamp,
                event.error_class,
                event.exit_code,
                event.http_status,
            )
        elif name == "TaskTimedOut":
            return self.timed_out(event.position, task_id, timestamp, event.timeout_kind)
        elif name == "TaskRetryScheduled":
            self.retry_scheduled(task_id, event.retry_at)
        elif name == "TaskCancelled":
            return self.cancelled(event.position, task_id, timestamp)
        return None  # TaskHeartbeat, TaskSkipped, ...: nothing

    # -- before an attempt ----------------------------------------------------------------

    def enqueued(
        self,
        task_id: Any,
        timestamp: Any,
        type_name: str | None,
        adapter: str | None,
        queue: str | None,
        lane: str | None,
        principal: str | None,
        role: str | None,
        initial_state: str | None,
        run_at: Any,
        depends_on: Sequence[Any],
        args_bytes: int,
    ) -> None:
        state = self.state
        depth = 1 + state.max_depth(depends_on) if depends_on else 0
        if depth:
            state.set_depth(task_id, depth)
        if initial_state == "ready":
            ready_at = timestamp
        elif initial_state == "scheduled":
            ready_at = run_at or timestamp
        else:  # blocked: ready when unblocked
            ready_at = None
        state.put(
            task_id,
            TaskFacts(
                type_name or "",
                adapter or "",
                queue or "",
                lane,
                principal or "",
                role or "",
                timestamp,
                ready_at,
                run_at,
                args_bytes,
                len(depends_on),
                depth,
            ),
        )

    def unblocked(self, task_id: Any, timestamp: Any) -> None:
        facts = self.state.get(task_id)
        if facts is None:
            return
        run_at = facts.run_at
        facts.ready_at = run_at if run_at is not None and run_at > timestamp else timestamp
        self.state.put(task_id, facts)

    def retry_scheduled(self, task_id: Any, retry_at: Any) -> None:
        facts = self.state.get(task_id)
        if facts is None:
            return
        facts.ready_at = facts.run_at = retry_at
        self.state.put(task_id, facts)

    def started(self, task_id: Any, timestamp: Any, attempt: int, worker: str | None) -> None:
        facts = self.state.get(task_id)
        if facts is None:
            return
        facts.attempt = attempt
        facts.started_at = timestamp
        facts.node = worker
        self.state.put(task_id, facts)

    # -- the end of an attempt ------------------------------------------------------------

    def succeeded(
        self,
        position: int,
        task_id: Any,
        timestamp: Any,
        result_bytes: int | None,
        exit_code: int | None,
        http_status: int | None,
    ) -> AttemptRow | None:
        facts = self.state.get(task_id)
        if facts is None or facts.started_at is None:
            return None
        self.state.drop(task_id)  # a success is final: no retry can follow
        return self._row(
            facts, position, task_id, timestamp, "succeeded", None, None, exit_code,
            http_status, result_bytes,
        )  # fmt: skip

    def failed(
        self,
        position: int,
        task_id: Any,
        timestamp: Any,
        error_class: str | None,
        exit_code: int | None,
        http_status: int | None,
    ) -> AttemptRow | None:
        facts = self.state.get(task_id)
        if facts is None or facts.started_at is None:
            return None
        row = self._row(
            facts, position, task_id, timestamp, "failed", error_class, None, exit_code,
            http_status, None,
        )  # fmt: skip
        self._attempt_over(task_id, facts)
        return row

    def timed_out(
        self, position: int, task_id: Any, timestamp: Any, kind: str | None
    ) -> AttemptRow | None:
        facts = self.state.get(task_id)
        if facts is None:
            return None
        row = None
        if facts.started_at is not None:
            row = self._row(
                facts, position, task_id, timestamp, "timed_out", "Timeout", kind, None, None,
                None,
            )  # fmt: skip
        if kind == "schedule_to_close":
            self.state.drop(task_id)  # past its deadline: not even a manual retry
        elif row is not None:
            self._attempt_over(task_id, facts)
        return row

    def cancelled(self, position: int, task_id: Any, timestamp: Any) -> AttemptRow | None:
        facts = self.state.get(task_id)
        if facts is None or facts.started_at is None:
            return None
        row = self._row(
            facts, position, task_id, timestamp, "cancelled", "Cancelled", None, None, None,
            None,
        )  # fmt: skip
        self._attempt_over(task_id, facts)
        return row

    def _attempt_over(self, task_id: Any, facts: TaskFacts) -> None:
        """Kept: a failed, timed-out or cancelled task may be retried (even by hand)."""
        facts.started_at = None
        facts.node = None
        self.state.put(task_id, facts)

    def _row(
        self,
        facts: TaskFacts,
        position: int,
        task_id: Any,
        finished_at: Any,
        outcome: str,
        error_class: str | None,
        timeout_kind: str | None,
        exit_code: int | None,
        http_status: int | None,
        result_bytes: int | None,
    ) -> AttemptRow:
        started_at = facts.started_at
        ready_at = facts.ready_at
        between = self.between
        return AttemptRow(
            position,
            task_id,
            facts.attempt,
            facts.task_type,
            facts.adapter,
            facts.queue,
            facts.lane,
            facts.principal,
            facts.role,
            facts.node or "",
            facts.enqueued_at,
            ready_at,
            started_at,
            finished_at,
            None if ready_at is None else between(ready_at, started_at),
            between(started_at, finished_at),
            outcome,
            error_class,
            timeout_kind,
            exit_code,
            http_status,
            facts.args_bytes,
            result_bytes,
            facts.dependencies,
            facts.dag_depth,
        )


# -- the live projection ------------------------------------------------------------------

_CREATE = """
CREATE TABLE IF NOT EXISTS {rows} (
    position bigint NOT NULL,
    task_id uuid NOT NULL,
    attempt integer NOT NULL,
    task_type text NOT NULL,
    adapter text NOT NULL,
    queue text NOT NULL,
    lane text,
    principal text NOT NULL,
    role text NOT NULL,
    node text NOT NULL,
    enqueued_at timestamptz NOT NULL,
    ready_at timestamptz,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    queue_wait_s double precision,
    run_s double precision NOT NULL,
    outcome text NOT NULL,
    error_class text,
    timeout_kind text,
    exit_code bigint,
    http_status integer,
    args_bytes bigint NOT NULL,
    result_bytes bigint,
    dependencies integer NOT NULL,
    dag_depth integer NOT NULL,
    PRIMARY KEY (task_id, attempt)
);
CREATE UNIQUE INDEX IF NOT EXISTS attempt_dataset_position_idx ON {rows} (position);
CREATE INDEX IF NOT EXISTS attempt_dataset_type_idx ON {rows} (task_type, position);
CREATE TABLE IF NOT EXISTS {tasks} (
    task_id uuid PRIMARY KEY,
    task_type text NOT NULL,
    adapter text NOT NULL,
    queue text NOT NULL,
    lane text,
    principal text NOT NULL,
    role text NOT NULL,
    enqueued_at timestamptz NOT NULL,
    ready_at timestamptz,
    run_at timestamptz,
    args_bytes bigint NOT NULL,
    dependencies integer NOT NULL,
    dag_depth integer NOT NULL,
    attempt integer NOT NULL,
    started_at timestamptz,
    node text
);
CREATE TABLE IF NOT EXISTS {depths} (
    task_id uuid PRIMARY KEY,
    depth integer NOT NULL
);
"""


_FACT_TYPES = {
    "task_type": "text",
    "adapter": "text",
    "queue": "text",
    "lane": "text",
    "principal": "text",
    "role": "text",
    "enqueued_at": "timestamptz",
    "ready_at": "timestamptz",
    "run_at": "timestamptz",
    "args_bytes": "bigint",
    "dependencies": "integer",
    "dag_depth": "integer",
    "attempt": "integer",
    "started_at": "timestamptz",
    "node": "text",
}
_ROW_TYPES = {
    "position": "bigint",
    "task_id": "uuid",
    "attempt": "integer",
    "enqueued_at": "timestamptz",
    "ready_at": "timestamptz",
    "started_at": "timestamptz",
    "finished_at": "timestamptz",
    "queue_wait_s": "double precision",
    "run_s": "double precision",
    "exit_code": "bigint",
    "http_status": "integer",
    "args_bytes": "bigint",
    "result_bytes": "bigint",
    "dependencies": "integer",
    "dag_depth": "integer",
}


def _unnest(types: list[str]) -> sql.Composable:
    """``unnest(%s::type[], ...)``: one array parameter per column."""
    return sql.SQL("unnest({})").format(
        sql.SQL(", ").join(sql.SQL("%s::" + t + "[]") for t in types)
    )


class TableFoldState:
    """``FoldState`` in the projection's tables, read through a bounded cache, written
    behind.

    ``load`` reads what a batch of events will need in two queries; reads then hit the
    cache (or, for anything not loaded, the tables). Changes are kept until ``flush``
    writes them in the runner's transaction, with few statements: every changed task's
    facts in one upsert, the dropped ones in one delete, new depths in one insert.
    ``forget`` empties the cache (and drops unwritten changes) whenever events may have
    been applied elsewhere or a batch was rolled back.
    """

    CACHE_LIMIT = 50_000

    def __init__(self, schema: str) -> None:
        self.cursor: Cursor | None = None
        self._facts: dict[UUID, TaskFacts | None] = {}
        self._depths: dict[UUID, int] = {}
        self._changed: dict[UUID, TaskFacts | None] = {}  # None: dropped
        self._new_depths: dict[UUID, int] = {}
        tasks = sql.Identifier(schema, TASKS)
        depths = sql.Identifier(schema, DEPTHS)
        columns = sql.SQL(", ").join(map(sql.Identifier, FACT_FIELDS))
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(f)) for f in FACT_FIELDS[1:]
        )
        self._sql_select = _compose(
            sql.SQL("SELECT task_id, {} FROM {} WHERE task_id = ANY(%s)").format(columns, tasks)
        )
        self._sql_upsert = _compose(
            sql.SQL(
                "INSERT INTO {} (task_id, {}) SELECT * FROM {} "
                "ON CONFLICT (task_id) DO UPDATE SET {}"
            ).format(
                tasks, columns, _unnest(["uuid"] + [_FACT_TYPES[f] for f in FACT_FIELDS]), updates
            )
        )
        self._sql_delete = _compose(sql.SQL("DELETE FROM {} WHERE task_id = ANY(%s)").format(tasks))
        self._sql_select_depths = _compose(
            sql.SQL("SELECT task_id, depth FROM {} WHERE task_id = ANY(%s)").format(depths)
        )
        self._sql_insert_depths = _compose(
            sql.SQL("INSERT INTO {} (task_id, depth) SELECT * FROM {}").format(
                depths, _unnest(["uuid", "integer"])
            )
        )

    def forget(self) -> None:
        self._facts.clear()
        self._depths.clear()
        self._changed.clear()
        self._new_depths.clear()

    def _cur(self) -> Cursor:
        assert self.cursor is not None, "TableFoldState used outside a batch"
        return self.cursor

    def load(self, task_ids: Iterable[UUID], dependency_ids: Iterable[UUID]) -> None:
        """Read the facts of ``task_ids`` and the depths of ``dependency_ids`` that the
        cache lacks, one query each."""
        missing = [t for t in set(task_ids) if t not in self._facts]
        if missing:
            cursor = self._cur()
            cursor.execute(self._sql_select, (missing,))
            for row in cursor.fetchall():
                self._facts[row["task_id"]] = TaskFacts(**{f: _in_utc(row[f]) for f in FACT_FIELDS})
            for task_id in missing:
                self._facts.setdefault(task_id, None)
        self._load_depths(set(dependency_ids))

    def _load_depths(self, task_ids: Iterable[UUID]) -> None:
        missing = [t for t in task_ids if t not in self._depths]
        if missing:
            cursor = self._cur()
            cursor.execute(self._sql_select_depths, (missing,))
            found = {row["task_id"]: row["depth"] for row in cursor.fetchall()}
            for task_id in missing:
                self._depths[task_id] = found.get(task_id, 0)

    def get(self, task_id: UUID) -> TaskFacts | None:
        if task_id not in self._facts:
            self.load([task_id], [])
        return self._facts[task_id]

    def put(self, task_id: UUID, facts: TaskFacts) -> None:
        self._facts[task_id] = self._changed[task_id] = facts

    def drop(self, task_id: UUID) -> None:
        self._facts[task_id] = self._changed[task_id] = None

    def max_depth(self, task_ids: Sequence[UUID]) -> int:
        self._load_depths(task_ids)
        return max((self._depths[t] for t in task_ids), default=0)

    def set_depth(self, task_id: UUID, depth: int) -> None:
        self._depths[task_id] = self._new_depths[task_id] = depth

    def note_root(self, task_id: UUID) -> None:
        """A task enqueued with no dependency: depth 0, known without a look-up."""
        self._depths[task_id] = 0

    def flush(self) -> None:
        """Write the changes kept since the last flush; then trim the cache."""
        cursor = self._cur()
        changed = [(t, f) for t, f in self._changed.items() if f is not None]
        if changed:
            arrays = [[t for t, _ in changed]]
            arrays += [[getattr(f, name) for _, f in changed] for name in FACT_FIELDS]
            cursor.execute(self._sql_upsert, arrays)
        dropped = [t for t, f in self._changed.items() if f is None]
        if dropped:
            cursor.execute(self._sql_delete, (dropped,))
        if self._new_depths:
            cursor.execute(
                self._sql_insert_depths, (list(self._new_depths), list(self._new_depths.values()))
            )
        self._changed.clear()
        self._new_depths.clear()
        if len(self._facts) > self.CACHE_LIMIT or len(self._depths) > self.CACHE_LIMIT:
            self.forget()


class DatasetProjection:
    """The learning dataset in ``attempt_dataset``: the fold's rows, exactly once.

    A batch of events is folded in memory over what it needs of the tables (read in two
    queries), then written with a few statements: the rows in one insert, the per-task
    facts and depths as ``TableFoldState.flush`` writes them.
    """

    name = "dataset"
    tables = (ROWS, TASKS, DEPTHS)

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.rows = sql.Identifier(schema, ROWS)
        self.state = TableFoldState(schema)
        self.fold = AttemptFold(self.state)
        self._last_position = 0
        self._sql_insert_rows = _compose(
            sql.SQL("INSERT INTO {} ({}) SELECT * FROM {}").format(
                self.rows,
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
                _unnest([_ROW_TYPES.get(c, "text") for c in COLUMNS]),
            )
        )

    def forget(self) -> None:
        self.state.forget()

    def create(self, cursor: Cursor) -> None:
        cursor.execute(
            sql.SQL(_CREATE).format(
                rows=self.rows,
                tasks=sql.Identifier(self.schema, TASKS),
                depths=sql.Identifier(self.schema, DEPTHS),
            )
        )

    def apply(self, cursor: Cursor, event: Event, position: int) -> list[Any]:
        return self.apply_batch(cursor, [(event, position)])

    def apply_batch(self, cursor: Cursor, events: Iterable[tuple[Event, int]]) -> list[Any]:
        """Apply ``(event, position)`` pairs in log order, with few statements."""
        batch = list(events)
        if not batch:
            return []
        if batch[0][1] <= self._last_position:
            self.forget()  # a batch is applied again (rolled back, or a rebuild): reload
        self._last_position = batch[-1][1]
        facts = [f for f in (event_facts(e, p) for e, p in batch) if f is not None]
        if not facts:
            return []
        state = self.state
        state.cursor = cursor
        enqueued = [f for f in facts if f.name == "TaskEnqueued"]
        new = {f.task_id for f in enqueued}
        state.load(
            (f.task_id for f in facts if f.task_id not in new),
            (d for f in enqueued for d in f.depends_on or () if d not in new),
        )
        apply = self.fold.apply
        rows = []
        for event in facts:
            if event.name == "TaskEnqueued" and not event.depends_on:
                state.note_root(event.task_id)
            row = apply(event)
            if row is not None:
                rows.append(row)
        state.flush()
        if rows:
            cursor.execute(
                self._sql_insert_rows, [list(column) for column in zip(*rows, strict=True)]
            )
        return []


def _compose(statement: sql.Composable) -> str:
    return statement.as_string(None)


def _in_utc(value: Any) -> Any:
    """Times read back from a table carry the session's zone; the fold works in UTC."""
    return value.astimezone(UTC) if isinstance(value, datetime) else value
