"""The dataset's fold: ``AttemptFold`` turns task events in log order into one
``AttemptRow`` per finished attempt.

``AttemptFold`` is pure: it takes task events (as ``EventFacts``, or through its method for
each kind of event) and returns the row of the attempt an event ends (or None). It keeps
per-task facts (type, queue, times, sizes, depth, the running attempt) in a ``FoldState``:
in memory for a replay (``MemoryFoldState``), in tables for the live projection
(``projections/dataset.py``). Both run the same fold, so the table and a replay cannot
disagree.

Rows use event timestamps only (never the clock), so a replay to the same bound gives the
same rows. See docs/dataset.md for every column and rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Generic, NamedTuple, Protocol
from uuid import UUID

from execution_ledger.projections.base import Event
from execution_ledger.projections.event_facts import EventFacts, IdT, TimeT, event_facts


class AttemptRow(NamedTuple, Generic[IdT, TimeT]):
    """One finished attempt; the field order is the column order of every export.

    ``AttemptRow[UUID, datetime]``, or ``AttemptRow[str, str]`` in the replay's text form
    (``adapters/dataset/text_form.py``)."""

    position: int  # log position of the event that ended the attempt
    task_id: IdT
    attempt: int
    task_type: str
    adapter: str
    queue: str
    lane: str | None
    principal: str
    role: str
    node: str
    enqueued_at: TimeT
    ready_at: TimeT | None
    started_at: TimeT
    finished_at: TimeT
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
class TaskFacts(Generic[TimeT]):
    """What the fold must remember about a task between its events (times as the fold
    gets them: datetimes, or text in a replay)."""

    task_type: str
    adapter: str
    queue: str
    lane: str | None
    principal: str
    role: str
    enqueued_at: TimeT
    ready_at: TimeT | None
    run_at: TimeT | None
    args_bytes: int
    dependencies: int
    dag_depth: int
    attempt: int = 0
    started_at: TimeT | None = None  # set while an attempt runs
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


_MICROSECOND = timedelta(microseconds=1)


def seconds_between(start: datetime, end: datetime) -> float:
    """``end - start`` in seconds, exact to the microsecond (no float drift)."""
    return ((end - start) // _MICROSECOND) / 1_000_000


Between = Callable[[Any, Any], float]


# -- the fold ---------------------------------------------------------------------------------


class AttemptFold:
    """Events in log order in, finished attempt rows out (at most one per event).

    Task ids and times pass through the fold as they come: it only compares times (``>``)
    and measures them with ``between``. The projection gives UUIDs and datetimes; a replay
    gives text (``adapters/dataset/text_form.py``: ids as text, times as UTC ISO text with
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
        elif name in ("TaskRetryScheduled", "TaskDebounced"):  # a new start
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
        assert started_at is not None, "a row is made only for an attempt that started"
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
