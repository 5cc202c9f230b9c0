"""Readiness graph: nodes and edges of dependent tasks, pending-dependency counts, ready sets.

Every update touches only the rows of the task an event is about and the edges out of it:
a success decrements the pending count of its direct dependents in one statement; nothing
ever scans all tasks. ``apply`` returns the changes a reactor may turn into events
(``Unblocked`` when a blocked task's last dependency succeeded, ``Doomed`` when a
dependency ended other than succeeded); each carries the versions it was decided at, so a
reactor can tell whether the store has moved on since (as it has during a rebuild).

``apply_batch`` writes the plain transitions of a batch (a start, a heartbeat, the end of a
task known to have no dependents: only ``state`` and ``version`` change) in one statement,
the last transition of each task winning, and the nodes of tasks enqueued with no
dependency (and not blocked) in one insert; any other event first writes those waiting
(the new nodes first), so every statement still sees the rows as applying the events one by
one would leave them. Both send their rows as one JSON text (``projections/json_rows.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import sql

from execution_ledger.projections.base import Cursor, Event, is_task_event, kind
from execution_ledger.projections.json_rows import from_json, json_rows, uuid_array

NODES = "readiness_nodes"
EDGES = "readiness_edges"

_CREATE = """
CREATE TABLE IF NOT EXISTS {nodes} (
    task_id uuid PRIMARY KEY,
    queue text NOT NULL,
    priority integer NOT NULL,
    lane text,
    state text NOT NULL,
    pending integer NOT NULL,
    depth integer NOT NULL,
    run_at timestamptz,
    due_at timestamptz,
    schedule_to_start double precision,
    deadline timestamptz,
    graph_id uuid,
    version integer NOT NULL,
    enqueued_position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS readiness_ready_idx ON {nodes} (queue, priority DESC, enqueued_position)
    WHERE state IN ('ready', 'scheduled');
CREATE INDEX IF NOT EXISTS readiness_lane_idx ON {nodes} (lane, enqueued_position)
    WHERE lane IS NOT NULL AND state IN ('ready', 'scheduled');
CREATE INDEX IF NOT EXISTS readiness_deadline_idx ON {nodes} (deadline)
    WHERE deadline IS NOT NULL AND state IN ('blocked', 'scheduled', 'ready', 'running');
CREATE INDEX IF NOT EXISTS readiness_due_idx ON {nodes} (due_at)
    WHERE schedule_to_start IS NOT NULL AND state IN ('scheduled', 'ready');
CREATE TABLE IF NOT EXISTS {edges} (
    parent uuid NOT NULL,
    child uuid NOT NULL,
    PRIMARY KEY (parent, child)
);
CREATE INDEX IF NOT EXISTS readiness_edges_child_idx ON {edges} (child);
"""

_BAD_ENDINGS = {"TaskFailed", "TaskTimedOut", "TaskCancelled", "TaskSkipped"}
_STATE_AFTER = {
    "TaskStarted": "running",
    "TaskHeartbeat": "running",
    "TaskSucceeded": "succeeded",
    "TaskFailed": "failed",
    "TaskTimedOut": "failed",
    "TaskRetryScheduled": "scheduled",
    "TaskCancelled": "cancelled",
    "TaskSkipped": "skipped",
}
BAD_STATES = ("failed", "cancelled", "skipped")
_ENDINGS = _BAD_ENDINGS | {"TaskSucceeded"}


@dataclass(frozen=True)
class Unblocked:
    """``task_id`` (seen at ``version``) has no pending dependency left."""

    task_id: UUID
    version: int


@dataclass(frozen=True)
class Doomed:
    """``task_id`` (at ``version``) waits on ``dependency``, which ended badly (at
    ``dependency_version``)."""

    task_id: UUID
    version: int
    dependency: UUID
    dependency_version: int
    dependency_state: str


ReadinessChange = Unblocked | Doomed


class ReadinessGraph:
    name = "readiness"
    tables = (NODES, EDGES)

    def __init__(self, schema: str) -> None:
        self.nodes = sql.Identifier(schema, NODES)
        self.edges = sql.Identifier(schema, EDGES)
        # Statements composed once (composing per event cost a fifth of the projection's time).
        self._sql_update_state = _compose(
            "UPDATE {nodes} SET state = %s, version = %s, run_at = coalesce(%s, run_at), "
            "due_at = CASE WHEN %s::timestamptz IS NOT NULL THEN %s::timestamptz "
            "WHEN %s::timestamptz IS NOT NULL THEN greatest(%s::timestamptz, run_at) "
            "ELSE due_at END WHERE task_id = %s",
            nodes=self.nodes,
        )
        self._sql_select_dependencies = _compose(
            "SELECT task_id, state, version, depth FROM {nodes} WHERE task_id = ANY(%s::uuid[])",
            nodes=self.nodes,
        )
        self._sql_insert_node = _compose(
            f"INSERT INTO {{nodes}} ({_NODE_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            nodes=self.nodes,
        )
        self._sql_insert_nodes = (
            sql.SQL(f"INSERT INTO {{}} ({_NODE_COLUMNS}) {{}}")
            .format(self.nodes, from_json(_NODE_TYPES))
            .as_string(None)
        )
        self._sql_insert_edges = _compose(
            "INSERT INTO {edges} (parent, child) SELECT unnest(%s::uuid[]), %s", edges=self.edges
        )
        self._sql_select_children = _compose(
            "SELECT child FROM {edges} WHERE parent = %s", edges=self.edges
        )
        self._sql_select_parents = _compose(
            "SELECT DISTINCT parent FROM {edges} WHERE parent = ANY(%s::uuid[])", edges=self.edges
        )
        self._sql_decrement_pending = _compose(
            "UPDATE {nodes} SET pending = pending - 1 WHERE task_id = ANY(%s::uuid[]) "
            "RETURNING task_id, pending, state, version",
            nodes=self.nodes,
        )
        self._sql_select_blocked = _compose(
            "SELECT task_id, version FROM {nodes} "
            "WHERE task_id = ANY(%s::uuid[]) AND state = 'blocked'",
            nodes=self.nodes,
        )
        self._sql_place = _compose(
            "UPDATE {nodes} SET version = %s, priority = coalesce(%s, priority), "
            "queue = coalesce(%s, queue) WHERE task_id = %s",
            nodes=self.nodes,
        )
        # ``= ANY`` of the ids: the rows found by the key, not by a hash join over a full
        # scan (the planner guesses 100 rows for the JSON function; see task_view.py).
        self._sql_move_states = _compose(
            "UPDATE {nodes} AS n SET state = u.state, version = u.version "
            "FROM (SELECT (r ->> 0)::uuid AS task_id, r ->> 1 AS state, "
            "(r ->> 2)::integer AS version FROM jsonb_array_elements(%s::jsonb) AS r) AS u "
            "WHERE n.task_id = u.task_id AND n.task_id = ANY(%s::uuid[])",
            nodes=self.nodes,
        )
        # Tasks known to have no dependent: seen enqueued by this instance, or found with
        # none by ``_learn_childless``, and no dependent seen since. Their end needs no
        # look-up of dependents. Only a shortcut; ``forget`` empties it whenever events may
        # have been applied elsewhere (another runner, a rebuild).
        self._childless: set[UUID] = set()

    def forget(self) -> None:
        self._childless.clear()

    def create(self, cursor: Cursor) -> None:
        cursor.execute(sql.SQL(_CREATE).format(nodes=self.nodes, edges=self.edges))

    def apply(self, cursor: Cursor, event: Event, position: int) -> list[Any]:
        if not is_task_event(event):
            return []
        name = kind(event)
        if name == "TaskEnqueued":
            return self._enqueued(cursor, event, position)
        if name in ("TaskReprioritised", "TaskMoved"):
            self._placed(cursor, event, name)
            return []
        # TaskUnblocked and the workflow events (TaskSignalled, ...) carry their state after;
        # a TaskRetryScheduled its retry_at (attr-defined: ``Event`` names neither).
        state = _STATE_AFTER.get(name) or event.state  # type: ignore[attr-defined]
        run_at = event.retry_at if name == "TaskRetryScheduled" else None  # type: ignore[attr-defined]
        if name == "TaskDebounced":  # a coalesced submission moved its start on
            run_at = event.run_at  # type: ignore[attr-defined]
        # due_at: from when the task may start (the schedule_to_start clock starts there).
        due_now = event.timestamp if name == "TaskUnblocked" else None
        cursor.execute(
            self._sql_update_state,
            (
                state,
                event.originator_version,
                run_at,
                run_at,
                run_at,
                due_now,
                due_now,
                event.originator_id,
            ),
        )
        if name == "TaskSucceeded":
            changes = self._release_dependents(cursor, event.originator_id)
            self._childless.discard(event.originator_id)  # it can take no new dependent now
            return changes
        if name in _BAD_ENDINGS:
            return self._doom_dependents(cursor, event, state)
        return []

    def apply_batch(self, cursor: Cursor, events: Iterable[tuple[Event, int]]) -> list[Any]:
        """Apply ``(event, position)`` pairs in log order; plain transitions in one statement,
        the nodes of tasks enqueued with no dependency in another."""
        events = list(events)
        self._learn_childless(cursor, events)
        changes: list[Any] = []
        nodes: list[tuple[Any, ...]] = []  # new nodes not yet written
        moves: dict[UUID, tuple[str, int]] = {}  # task -> (state, version), not yet written
        for event, position in events:
            name = kind(event) if is_task_event(event) else ""
            if self._is_plain_transition(event, name):
                moves[event.originator_id] = (_STATE_AFTER[name], event.originator_version)
                if name == "TaskSucceeded":
                    self._childless.discard(event.originator_id)  # as ``apply`` does
                continue
            if name == "TaskEnqueued" and _is_root(event):
                nodes.append(_node_row(event, position, pending=0, depth=0))
                self._childless.add(event.originator_id)  # as ``_enqueued`` does
                continue
            self._write_waiting(cursor, nodes, moves)
            changes.extend(self.apply(cursor, event, position))
        self._write_waiting(cursor, nodes, moves)
        return changes

    def _learn_childless(self, cursor: Cursor, events: list[tuple[Event, int]]) -> None:
        """Look up, in one query, which of the batch's ending tasks not known childless
        have a dependent; the others join ``_childless``, so their ends are plain
        transitions rather than one look-up each (a round trip per end: half the
        projection process's time in a drain of tasks it did not see enqueued, after a
        restart or a take-over). A dependent enqueued later in the batch takes its
        dependencies out of the set again, as every enqueue does."""
        ending = set()
        enqueued = set()  # in this batch: the loop learns them as it enqueues them
        for event, _ in events:
            if is_task_event(event):
                name = kind(event)
                if name in _ENDINGS:
                    ending.add(event.originator_id)
                elif name == "TaskEnqueued":
                    enqueued.add(event.originator_id)
        unknown = ending - enqueued - self._childless
        if not unknown:
            return
        cursor.execute(self._sql_select_parents, (uuid_array(unknown),))
        self._childless.update(unknown - {row["parent"] for row in cursor.fetchall()})

    def _is_plain_transition(self, event: Event, name: str) -> bool:
        """True when the event changes only its own task's state and version."""
        if name in ("TaskStarted", "TaskHeartbeat"):
            return True
        return name in _ENDINGS and event.originator_id in self._childless

    def _write_waiting(
        self, cursor: Cursor, nodes: list[tuple[Any, ...]], moves: dict[UUID, tuple[str, int]]
    ) -> None:
        """The new nodes (a task's enqueue comes before its moves), then the moves."""
        if nodes:
            cursor.execute(self._sql_insert_nodes, (json_rows(nodes),))
            nodes.clear()
        if moves:
            rows = [(task_id, state, version) for task_id, (state, version) in moves.items()]
            cursor.execute(self._sql_move_states, (json_rows(rows), uuid_array(moves)))
            moves.clear()

    def _enqueued(self, cursor: Cursor, event: Any, position: int) -> list[ReadinessChange]:
        deps = list(event.depends_on)
        rows = []
        if deps:
            cursor.execute(self._sql_select_dependencies, (uuid_array(deps),))
            rows = cursor.fetchall()
        succeeded = sum(1 for r in rows if r["state"] == "succeeded")
        pending = len(deps) - succeeded
        depth = 1 + max((r["depth"] for r in rows), default=-1)
        cursor.execute(
            self._sql_insert_node, _node_row(event, position, pending=pending, depth=depth)
        )
        self._childless.difference_update(deps)
        self._childless.add(event.originator_id)
        if deps:
            cursor.execute(self._sql_insert_edges, (uuid_array(deps), event.originator_id))
        if event.initial_state != "blocked":
            return []
        doomed = [
            Doomed(
                event.originator_id,
                event.originator_version,
                r["task_id"],
                r["version"],
                r["state"],
            )
            for r in rows
            if r["state"] in BAD_STATES
        ]
        if doomed:
            return list(doomed)
        return [Unblocked(event.originator_id, event.originator_version)] if pending == 0 else []

    def _placed(self, cursor: Cursor, event: Any, name: str) -> None:
        """A waiting task's new priority or queue (its state stays)."""
        priority = event.priority if name == "TaskReprioritised" else None
        queue = event.queue if name == "TaskMoved" else None
        cursor.execute(
            self._sql_place, (event.originator_version, priority, queue, event.originator_id)
        )

    def _children(self, cursor: Cursor, task_id: UUID) -> list[UUID]:
        """Direct dependents, by the edges' primary key (parent first)."""
        if task_id in self._childless:
            return []
        cursor.execute(self._sql_select_children, (task_id,))
        return [row["child"] for row in cursor.fetchall()]

    def _release_dependents(self, cursor: Cursor, task_id: UUID) -> list[ReadinessChange]:
        # Two statements by primary key rather than one join, so that the planner cannot
        # pick a scan of all nodes (as it did here on a freshly filled, unanalysed table).
        children = self._children(cursor, task_id)
        if not children:
            return []
        cursor.execute(self._sql_decrement_pending, (uuid_array(children),))
        return [
            Unblocked(r["task_id"], r["version"])
            for r in cursor.fetchall()
            if r["pending"] == 0 and r["state"] == "blocked"
        ]

    def _doom_dependents(self, cursor: Cursor, event: Any, state: str) -> list[ReadinessChange]:
        children = self._children(cursor, event.originator_id)
        if not children:
            return []
        cursor.execute(self._sql_select_blocked, (uuid_array(children),))
        return [
            Doomed(r["task_id"], r["version"], event.originator_id, event.originator_version, state)
            for r in cursor.fetchall()
        ]


# A node's columns in the order of ``_node_row``, and their types.
_NODE_COLUMNS = (
    "task_id, queue, priority, lane, state, pending, depth, run_at, due_at, schedule_to_start, "
    "deadline, graph_id, version, enqueued_position"
)
_NODE_TYPES = (
    "uuid",
    "text",
    "integer",
    "text",
    "text",
    "integer",
    "integer",
    "timestamptz",
    "timestamptz",
    "double precision",
    "timestamptz",
    "uuid",
    "integer",
    "bigint",
)


def _is_root(event: Any) -> bool:
    """A task enqueued with no dependency and not blocked: its node needs no look-up and
    its enqueue no change for a reactor."""
    return not event.depends_on and event.initial_state != "blocked"


def _node_row(event: Any, position: int, pending: int, depth: int) -> tuple[Any, ...]:
    """The new node of a ``TaskEnqueued`` (``_NODE_COLUMNS``)."""
    return (
        event.originator_id,
        event.queue,
        event.priority,
        event.lane,
        event.initial_state,
        pending,
        depth,
        event.run_at,
        None if event.initial_state == "blocked" else event.run_at or event.timestamp,
        event.timeouts.get("schedule_to_start"),
        _deadline(event),
        event.graph_id,
        event.originator_version,
        position,
    )


def _deadline(event: Any) -> datetime | None:
    """The schedule_to_close deadline of a task: enqueue time plus that timeout."""
    seconds = event.timeouts.get("schedule_to_close")
    return None if seconds is None else event.timestamp + timedelta(seconds=seconds)


def _compose(template: str, **identifiers: sql.Identifier) -> str:
    return sql.SQL(template).format(**identifiers).as_string(None)
