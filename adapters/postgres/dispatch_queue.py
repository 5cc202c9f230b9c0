"""The dispatch queue: every task not yet ended, and where it stands, written in the same
transaction as the events that move it.

Claims read their candidates here, not from a projection: a task is claimable the moment
the transaction that made it ready (its enqueue, its unblock, its retry) commits, and a
claim never meets a row that lags the log. Each save of tasks carries one statement that
inserts the rows of the tasks it enqueues (in enqueue order), and one that upserts the row
of every other task still alive after its new events (state, run_at) and deletes the row of
every task that ended; a save that leaves a task ready or scheduled, or ends one (freeing a
queue or lane slot), also notifies ``ledger_ready`` naming those queues, so idle workers of
those queues wake up on every node (``ready_payload``: a worker's own round names itself as
the sender of the slots it freed, which its own node need not wake for). Updated rows go in
task id order, so two transactions writing the same rows take their locks in the same order
(no deadlock).

``seq`` is the order tasks entered the queue (enqueue order): the order within a priority
and within a lane. A row keeps its ``seq`` while the task lives (blocked, started, retried),
so a retried task keeps its place in its lane.

Like ``running_attempts``, the table is derived from the log (the state of each task after
its last event), so it is not a second source of truth. A schema created before this table
existed gets it filled once from the readiness graph (``fill_from_readiness``).
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from psycopg import sql

from execution_ledger.adapters.postgres.coalescing_keys import CoalescingKeys
from execution_ledger.adapters.postgres.recorder import Statement
from execution_ledger.adapters.postgres.running import ready_channel
from execution_ledger.domain.task import Task, TaskState

TABLE = "dispatch_queue"
_CLAIMABLE = (TaskState.READY, TaskState.SCHEDULED)

_CREATE = """
CREATE TABLE IF NOT EXISTS {table} (
    task_id uuid PRIMARY KEY,
    queue text NOT NULL,
    lane text,
    priority integer NOT NULL,
    state text NOT NULL,
    run_at timestamptz,
    depends_on uuid[],
    seq bigint GENERATED ALWAYS AS IDENTITY
);
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS fair_key text;
CREATE INDEX IF NOT EXISTS dispatch_queue_claim_idx ON {table} (queue, priority DESC, seq)
    WHERE state IN ('ready', 'scheduled');
CREATE INDEX IF NOT EXISTS dispatch_queue_lane_idx ON {table} (lane, seq)
    WHERE lane IS NOT NULL AND state IN ('ready', 'scheduled');
CREATE INDEX IF NOT EXISTS dispatch_queue_due_idx ON {table} (run_at)
    WHERE state = 'scheduled';
CREATE INDEX IF NOT EXISTS dispatch_queue_blocked_idx ON {table} USING gin (depends_on)
    WHERE state = 'blocked';
"""

_FILL_FROM_READINESS = """
INSERT INTO {table} (task_id, queue, lane, priority, state, run_at, depends_on)
SELECT task_id, queue, lane, priority, state,
       CASE WHEN state = 'scheduled' THEN run_at END,
       CASE WHEN state = 'blocked' THEN
           ARRAY(SELECT e.parent FROM {edges} AS e WHERE e.child = n.task_id) END
FROM {nodes} AS n WHERE state IN ('blocked', 'scheduled', 'ready', 'running')
ORDER BY enqueued_position
ON CONFLICT (task_id) DO NOTHING
"""

# Rows travel as one JSON text and ids as one comma-separated text: psycopg dumps arrays
# element by element in Python, a string in C.
_SYNC = """
WITH ended AS (
    DELETE FROM {table} WHERE task_id = ANY(string_to_array(%s, ',')::uuid[])
)
INSERT INTO {table} (task_id, queue, lane, priority, state, run_at, depends_on, fair_key)
SELECT task_id, queue, lane, priority, state, run_at, depends_on, fair_key
FROM json_to_recordset(%s::json) AS r(
    task_id uuid, queue text, lane text, priority integer, state text, run_at timestamptz,
    depends_on uuid[], fair_key text
)
ON CONFLICT (task_id) DO UPDATE SET
    queue = excluded.queue, lane = excluded.lane, priority = excluded.priority,
    state = excluded.state, run_at = excluded.run_at, depends_on = excluded.depends_on,
    fair_key = excluded.fair_key
"""
# The rows of tasks enqueued by the save: a plain insert (an upsert costs a third more per
# row), in save order. A task id is new, so it has no row yet; if it had, the insert fails
# the save, as the insert of its first event would.
_INSERT_NEW = """
INSERT INTO {table} (task_id, queue, lane, priority, state, run_at, depends_on, fair_key)
SELECT task_id, queue, lane, priority, state, run_at, depends_on, fair_key
FROM json_to_recordset(%s::json) AS r(
    task_id uuid, queue text, lane text, priority integer, state text, run_at timestamptz,
    depends_on uuid[], fair_key text
)
"""


class DispatchQueue:
    """SQL of one schema's dispatch queue."""

    def __init__(self, schema: str) -> None:
        self.table = sql.Identifier(schema, TABLE)
        self.ready_channel = ready_channel(schema)
        self._sync = sql.SQL(_SYNC).format(table=self.table).as_string(None)
        self._insert_new = sql.SQL(_INSERT_NEW).format(table=self.table).as_string(None)
        self._keys = CoalescingKeys(schema)

    def create_statement(self) -> sql.Composed:
        return sql.SQL(_CREATE).format(table=self.table)

    def fill_from_readiness(
        self, readiness_nodes: sql.Identifier, readiness_edges: sql.Identifier
    ) -> sql.Composed:
        """Rows for the live tasks of an existing readiness graph (a schema upgrade)."""
        return sql.SQL(_FILL_FROM_READINESS).format(
            table=self.table, nodes=readiness_nodes, edges=readiness_edges
        )

    def statements_for(
        self,
        aggregates: Iterable[Any],
        sender: str | None = None,
        unbound: Container[str] = (),
    ) -> list[Statement]:
        """What keeps the queue in step with the pending events of ``aggregates`` (tasks
        with no new events and other aggregates change nothing). ``sender``: the worker
        whose round this save is (``ready_payload``). ``unbound``: queues whose limit no
        set of claims can reach now (``candidates.py``); a slot that comes free there lets
        no other node start anything it could not start already, so it wakes nobody (a
        lane's slot still does: the lane's next task becomes claimable)."""
        change = change_of(aggregates)
        if unbound and change.slots:
            slots = {q for q in change.slots if q not in unbound or q in change.lane_slots}
            change = replace(change, slots=frozenset(slots))
        return self.statements([change], sender)

    def statements(
        self, changes: Iterable[DispatchChange], sender: str | None = None
    ) -> list[Statement]:
        """The statements for the changes of several saves (a group commit): one insert of
        the new rows, one upsert and delete of the others, and one ready notice naming every
        queue they woke."""
        new: list[dict[str, Any]] = []
        updated: list[dict[str, Any]] = []
        ended: list[str] = []
        woken: set[str] = set()
        slots: set[str] = set()
        freed: list[str] = []
        for change in changes:
            new.extend(change.new)
            updated.extend(change.updated)
            ended.extend(change.ended)
            woken.update(change.woken)
            slots.update(change.slots)
            freed.extend(change.freed)
        statements = []
        # New tasks first, in save order (their ``seq`` is the enqueue order: FIFO within a
        # bulk enqueue); then rows updated, which another transaction may also hold, in id
        # order (no deadlock between two saves).
        if new:
            statements.append(Statement(self._insert_new, (json.dumps(new),)))
        if updated or ended:
            updated.sort(key=lambda row: row["task_id"])
            statements.append(Statement(self._sync, (",".join(ended), json.dumps(updated))))
        if not statements:
            return []
        if woken or slots:
            payload = ready_payload(woken, slots, sender)
            statements.append(Statement("SELECT pg_notify(%s, %s)", (self.ready_channel, payload)))
        if freed:  # ended tasks that held a singleton or debounce key
            statements.append(self._keys.released(sorted(freed)))
        return statements


@dataclass(frozen=True)
class DispatchChange:
    """What one save changes in the dispatch queue: the rows of the tasks still alive
    after their new events, the ids of those that ended, the queues to wake."""

    new: tuple[dict[str, Any], ...] = ()  # rows of the tasks the save enqueues
    updated: tuple[dict[str, Any], ...] = ()  # rows of tasks already in the queue
    ended: tuple[str, ...] = ()
    woken: frozenset[str] = frozenset()  # queues with work the save made claimable
    freed: tuple[str, ...] = ()  # ended tasks whose coalescing keys go with them
    slots: frozenset[str] = frozenset()  # queues of the ended tasks (a slot came free)
    lane_slots: frozenset[str] = frozenset()  # those of them where a lane's slot came free


def change_of(aggregates: Iterable[Any]) -> DispatchChange:
    """The dispatch queue's change for the pending events of ``aggregates`` (call it before
    their events are collected)."""
    live: list[Task] = []
    ended: list[Task] = []
    for task in aggregates:
        if isinstance(task, Task) and task.pending_events:
            (ended if task.state.is_terminal else live).append(task)
    if not live and not ended:
        return DispatchChange()
    woken = {task.queue for task in live if task.state in _CLAIMABLE}
    freed = tuple(str(t.id) for t in ended if t.singleton_key or t.debounce_key) if ended else ()
    new = [task for task in live if task.version == len(task.pending_events)]
    return DispatchChange(
        tuple(map(_row, new)),
        tuple(_row(task) for task in live if task.version != len(task.pending_events)),
        tuple(str(task.id) for task in ended),
        frozenset(woken),
        freed,
        frozenset(task.queue for task in ended),
        frozenset(task.queue for task in ended if task.lane is not None),
    )


def _row(task: Task) -> dict[str, Any]:
    """The task's row, with the fields ``json_to_recordset`` reads."""
    return {
        "task_id": str(task.id),
        "queue": task.queue,
        "lane": task.lane,
        "priority": task.priority,
        "state": task.state.value,
        "run_at": _iso(task.run_at) if task.state is TaskState.SCHEDULED else None,
        "depends_on": (
            [str(d) for d in task.depends_on] if task.state is TaskState.BLOCKED else None
        ),
        "fair_key": task.fair_key,  # a fair queue's candidates take turns by it
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def ready_payload(woken: Iterable[str], slots: Iterable[str], sender: str | None) -> str:
    """The ``ledger_ready`` notice's text: the queues with work that became claimable or a
    slot that came free, comma-separated (workers of other queues, or of queues they know
    are paused, stay asleep; an empty text wakes every worker).

    A worker's round (``sender``: its worker id) writes ``woken|sender|slots``: the queues
    whose slots only came free go after its id. The sender's own node does not wake for
    those: the round freed them before it read its candidates, so it already took what
    they let it take (``dispatch.py``); every other node wakes for both lists."""
    slots_only = set(slots) - set(woken)
    if sender is None or not slots_only:
        return ",".join(sorted({*woken, *slots_only}))
    return f"{','.join(sorted(woken))}|{sender}|{','.join(sorted(slots_only))}"


def queues_named(payload: str, worker_id: str) -> list[str] | None:
    """The queues a ready notice wakes the worker ``worker_id`` for (None: every queue),
    read from ``ready_payload``'s text."""
    woken, _, rest = payload.partition("|")
    if not rest:
        return woken.split(",") if woken else None
    sender, _, slots = rest.partition("|")
    named = woken.split(",") if woken else []
    if sender != worker_id:
        named += slots.split(",")
    return named
