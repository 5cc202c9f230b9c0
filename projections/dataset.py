"""The live learning dataset: ``DatasetProjection`` keeps the fold's rows in
``attempt_dataset``, exactly once, with the per-task facts in tables (``TableFoldState``).

A batch of events is folded by ``AttemptFold`` (``projections/attempt_fold.py``), the same
fold a replay runs, over what the batch needs of ``attempt_dataset_tasks`` and
``attempt_dataset_depths``; rows and changed facts are then written with a few statements,
each sending its rows as one JSON text that the server unpacks (``projections/json_rows.py``).
See docs/dataset.md for every column and rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any
from uuid import UUID

from psycopg import sql

from execution_ledger.projections.attempt_fold import COLUMNS, FACT_FIELDS, AttemptFold, TaskFacts
from execution_ledger.projections.base import Cursor, Event
from execution_ledger.projections.event_facts import event_facts
from execution_ledger.projections.json_rows import from_json, json_rows, uuid_array

ROWS = "attempt_dataset"
TASKS = "attempt_dataset_tasks"
DEPTHS = "attempt_dataset_depths"


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


_facts_of = attrgetter(*FACT_FIELDS)


class TableFoldState:
    """``FoldState`` in the projection's tables, read through a bounded cache, written
    behind.

    ``load`` reads what a batch of events will need in two queries; reads then hit the
    cache (or, for anything not loaded, the tables). Changes are kept until ``flush``
    writes them in the runner's transaction, with few statements: every changed task's
    facts in one upsert, the dropped ones in one delete, new depths in one insert (each
    sending its rows as one JSON text).
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
            sql.SQL("SELECT task_id, {} FROM {} WHERE task_id = ANY(%s::uuid[])").format(
                columns, tasks
            )
        )
        self._sql_upsert = _compose(
            sql.SQL(
                "INSERT INTO {} (task_id, {}) {} ON CONFLICT (task_id) DO UPDATE SET {}"
            ).format(
                tasks,
                columns,
                from_json(["uuid"] + [_FACT_TYPES[f] for f in FACT_FIELDS]),
                updates,
            )
        )
        self._sql_delete = _compose(
            sql.SQL("DELETE FROM {} WHERE task_id = ANY(%s::uuid[])").format(tasks)
        )
        self._sql_select_depths = _compose(
            sql.SQL("SELECT task_id, depth FROM {} WHERE task_id = ANY(%s::uuid[])").format(depths)
        )
        self._sql_insert_depths = _compose(
            sql.SQL("INSERT INTO {} (task_id, depth) {}").format(
                depths, from_json(["uuid", "integer"])
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
            cursor.execute(self._sql_select, (uuid_array(missing),))
            for row in cursor.fetchall():
                self._facts[row["task_id"]] = TaskFacts(**{f: _in_utc(row[f]) for f in FACT_FIELDS})
            for task_id in missing:
                self._facts.setdefault(task_id, None)
        self._load_depths(set(dependency_ids))

    def _load_depths(self, task_ids: Iterable[UUID]) -> None:
        missing = [t for t in task_ids if t not in self._depths]
        if missing:
            cursor = self._cur()
            cursor.execute(self._sql_select_depths, (uuid_array(missing),))
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
        changed = [(t, *_facts_of(f)) for t, f in self._changed.items() if f is not None]
        if changed:
            cursor.execute(self._sql_upsert, (json_rows(changed),))
        dropped = [t for t, f in self._changed.items() if f is None]
        if dropped:
            cursor.execute(self._sql_delete, (uuid_array(dropped),))
        if self._new_depths:
            cursor.execute(self._sql_insert_depths, (json_rows(self._new_depths.items()),))
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
            sql.SQL("INSERT INTO {} ({}) {}").format(
                self.rows,
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
                from_json([_ROW_TYPES.get(c, "text") for c in COLUMNS]),
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
            cursor.execute(self._sql_insert_rows, (json_rows(rows),))
        return []


def _compose(statement: sql.Composable) -> str:
    return statement.as_string(None)


def _in_utc(value: Any) -> Any:
    """Times read back from a table carry the session's zone; the fold works in UTC."""
    return value.astimezone(UTC) if isinstance(value, datetime) else value
