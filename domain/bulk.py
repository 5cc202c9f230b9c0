"""Bulk actions: one request to cancel, retry, re-prioritise or move every task that matches
a filter, recorded as a ``BulkAction`` aggregate, so the audit trail shows who asked for
what, how many tasks matched, and how many were changed or skipped.

Each task's own change is an event of that task naming the principal and the bulk action's
id (``TaskCancelled``, ``TaskRetryScheduled``, ``TaskReprioritised``, ``TaskMoved``). The
pure rules live here: which states an action applies to, the checks of its parameters
(``plan_change``) and what it does to one task (``apply_change``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, event

from execution_ledger.domain.errors import InvalidQuery, InvalidTransition, TaskNotFound
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.stored_topics import pin_topics
from execution_ledger.domain.task import (
    CANCELLABLE_STATES,
    RETRYABLE_STATES,
    WAITING_STATES,
    Task,
    TaskState,
)

MIN_PRIORITY, MAX_PRIORITY = -1000, 1000
MAX_REASON_CHARS = 1000


class BulkKind(StrEnum):
    CANCEL = "cancel"
    RETRY = "retry"
    REPRIORITISE = "reprioritise"
    MOVE = "move"

    @property
    def states(self) -> frozenset[TaskState]:
        """The states a task must be in for this action to change it."""
        if self is BulkKind.CANCEL:
            return CANCELLABLE_STATES
        if self is BulkKind.RETRY:
            return RETRYABLE_STATES
        return WAITING_STATES


@dataclass(frozen=True)
class MatchedKind:
    """A kind of task among an action's matches: what the role rules read of it."""

    type_name: str
    adapter: str


@dataclass(frozen=True)
class BulkChange:
    """What a bulk action does to each task it matches."""

    kind: BulkKind
    priority: int | None = None  # reprioritise: the new priority
    queue: str | None = None  # move: the queue to run in
    reason: str = ""  # cancel: recorded with each cancel

    def describe(self) -> str:
        if self.kind is BulkKind.REPRIORITISE:
            return f"reprioritise to {self.priority}"
        if self.kind is BulkKind.MOVE:
            return f"move to queue {self.queue!r}"
        return self.kind.value


def plan_change(
    registry: Registry,
    action: str,
    priority: int | None = None,
    queue: str | None = None,
    reason: str = "",
) -> BulkChange:
    """The change an action asks for, checked (``InvalidQuery`` naming what is wrong)."""
    try:
        kind = BulkKind(action)
    except ValueError:
        valid = ", ".join(k.value for k in BulkKind)
        raise InvalidQuery(f"unknown bulk action {action!r} (valid: {valid})") from None
    if (priority is not None) != (kind is BulkKind.REPRIORITISE):
        raise InvalidQuery("a priority is given with reprioritise, and only with it")
    if (queue is not None) != (kind is BulkKind.MOVE):
        raise InvalidQuery("a target queue is given with move, and only with it")
    if reason and kind is not BulkKind.CANCEL:
        raise InvalidQuery("a reason is given with cancel only")
    if priority is not None and not (
        isinstance(priority, int) and MIN_PRIORITY <= priority <= MAX_PRIORITY
    ):
        raise InvalidQuery(f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}")
    if queue is not None and queue not in registry.queues:
        known = ", ".join(sorted(registry.queues))
        raise InvalidQuery(f"unknown queue {queue!r} to move to (valid: {known})")
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidQuery(f"the reason is longer than {MAX_REASON_CHARS} characters")
    return BulkChange(kind, priority, queue, reason)


def check_state_filter(change: BulkChange, state: str | None) -> None:
    """Refuse a state filter the action can never act on (``retry --state ready``)."""
    if state is None or TaskState(state) in change.kind.states:
        return
    valid = ", ".join(s.value for s in TaskState if s in change.kind.states)
    raise InvalidQuery(
        f"{change.kind.value} acts on tasks that are {valid}; no task in state {state!r} "
        "would change"
    )


def apply_change(change: BulkChange, task: Task, by: str, bulk_id: UUID, now: datetime) -> bool:
    """Change one task (its new event pending); False when there is nothing to change (it
    already has that priority or queue). ``InvalidTransition`` when its state no longer
    allows the action (it moved on since it was matched)."""
    if task.state not in change.kind.states:
        raise InvalidTransition(f"cannot {change.kind.value} task {task.id}: it is {task.state}")
    if change.kind is BulkKind.CANCEL:
        task.cancel(by=by, reason=change.reason, bulk_id=bulk_id)
    elif change.kind is BulkKind.RETRY:
        task.retry_manually(now, by=by, bulk_id=bulk_id)
    elif change.kind is BulkKind.REPRIORITISE:
        assert change.priority is not None
        if task.priority == change.priority:
            return False
        task.reprioritise(change.priority, by=by, bulk_id=bulk_id)
    else:
        assert change.queue is not None
        if task.queue == change.queue:
            return False
        task.move(change.queue, by=by, bulk_id=bulk_id)
    return True


class BulkActionNotFound(TaskNotFound):
    """No bulk action has this id (answered like an unknown task: 404)."""

    code = "bulk_action_not_found"


class BulkState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"  # ended early (an error); the tasks changed so far stay changed


class BulkAction(Aggregate):
    """One bulk request, from its count to its end."""

    class BulkActionRequested(Aggregate.Created):
        action: str
        task_filter: dict[str, Any]  # the filter as given (times as ISO 8601 text)
        principal: str
        role: str
        matched: int  # tasks that matched when it was asked
        priority: int | None
        queue: str | None
        reason: str

    @event(BulkActionRequested)
    def __init__(
        self,
        id: UUID,
        action: str,
        task_filter: dict[str, Any],
        principal: str,
        role: str,
        matched: int,
        priority: int | None,
        queue: str | None,
        reason: str,
    ) -> None:
        self.action = action
        self.task_filter = dict(task_filter)
        self.principal = principal
        self.role = role
        self.matched = matched
        self.priority = priority
        self.queue = queue
        self.reason = reason
        self.changed = 0
        self.skipped = 0
        self.state = BulkState.RUNNING
        self.stop_reason: str | None = None

    @classmethod
    def request(
        cls,
        change: BulkChange,
        task_filter: dict[str, Any],
        principal: str,
        role: str,
        matched: int,
    ) -> BulkAction:
        return cls(
            id=uuid4(),
            action=change.kind.value,
            task_filter=task_filter,
            principal=principal,
            role=role,
            matched=matched,
            priority=change.priority,
            queue=change.queue,
            reason=change.reason,
        )

    @property
    def change(self) -> BulkChange:
        return BulkChange(BulkKind(self.action), self.priority, self.queue, self.reason)

    class BulkActionProgressed(Aggregate.Event):
        changed: int  # totals so far
        skipped: int

    def progress(self, changed: int, skipped: int) -> None:
        self._require_running("record progress of")
        self._progressed(changed=changed, skipped=skipped)

    @event(BulkActionProgressed)
    def _progressed(self, changed: int, skipped: int) -> None:
        self.changed = changed
        self.skipped = skipped

    class BulkActionCompleted(Aggregate.Event):
        changed: int
        skipped: int

    def complete(self, changed: int, skipped: int) -> None:
        self._require_running("complete")
        self._completed(changed=changed, skipped=skipped)

    @event(BulkActionCompleted)
    def _completed(self, changed: int, skipped: int) -> None:
        self.changed = changed
        self.skipped = skipped
        self.state = BulkState.COMPLETED

    class BulkActionStopped(Aggregate.Event):
        changed: int
        skipped: int
        reason: str

    def stop(self, changed: int, skipped: int, reason: str) -> None:
        self._require_running("stop")
        self._stopped(changed=changed, skipped=skipped, reason=reason[:MAX_REASON_CHARS])

    @event(BulkActionStopped)
    def _stopped(self, changed: int, skipped: int, reason: str) -> None:
        self.changed = changed
        self.skipped = skipped
        self.state = BulkState.STOPPED
        self.stop_reason = reason

    def _require_running(self, what: str) -> None:
        if self.state is not BulkState.RUNNING:
            raise InvalidTransition(f"cannot {what} bulk action {self.id}: it is {self.state}")


pin_topics(BulkAction)  # the log's names for these classes (see stored_topics)
