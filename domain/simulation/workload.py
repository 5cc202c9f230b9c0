"""The recorded workload of a window: each task's submission (type, queue, priority, lane,
args, dependencies, not-before time) and its recorded attempts (start, end, outcome), folded
from the log's task events in position order.

``WorkloadBuilder.add(event)`` takes events one at a time and returns the submissions that
became complete (the task ended, or will not change again within the window), in enqueue
order: a submission is held back while an earlier-enqueued one is still open, so the engine
always receives them in the order they were made, and memory holds only the tasks still in
flight (plus those enqueued after the oldest of them).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from execution_ledger.domain.task import event_name

ENDS = {"TaskSucceeded": "succeeded", "TaskFailed": "failed", "TaskTimedOut": "timed_out"}
FINAL = {"TaskCancelled": "cancelled", "TaskSkipped": "skipped"}


@dataclass(slots=True)
class RecordedAttempt:
    """One attempt as it ran: its start and end (epoch seconds) and outcome."""

    started: float
    ended: float | None = None
    outcome: str | None = None  # succeeded | failed | timed_out (None: still running)
    error_class: str | None = None
    timeout_kind: str | None = None
    retryable: bool = True

    @property
    def run_time(self) -> float | None:
        return None if self.ended is None else max(0.0, self.ended - self.started)


@dataclass(slots=True)
class Submission:
    """A task as it was submitted, and what happened to it."""

    task_id: UUID
    position: int  # of its TaskEnqueued: the enqueue order
    type_name: str
    queue: str
    priority: int
    lane: str | None
    args: Mapping[str, Any]
    enqueued: float  # epoch seconds
    run_at: float | None
    depends_on: tuple[UUID, ...]
    max_attempts: int
    attempts: list[RecordedAttempt] = field(default_factory=list)
    final: str | None = None  # succeeded | failed | cancelled | skipped | None (open)
    final_at: float | None = None
    waits_for_signals: bool = False  # it waited for signals or children (recorded times kept)

    @property
    def first_start(self) -> float | None:
        return self.attempts[0].started if self.attempts else None

    @property
    def recorded_wait(self) -> float | None:
        """Enqueue (or its not-before time) to its first start, as it happened."""
        start = self.first_start
        if start is None:
            return None
        return max(0.0, start - max(self.enqueued, self.run_at or self.enqueued))


def epoch(value: datetime) -> float:
    return value.timestamp()


class WorkloadBuilder:
    """Folds task events (decoded, in position order) into complete ``Submission``s."""

    def __init__(self) -> None:
        self._open: dict[UUID, Submission] = {}
        self._ready: list[tuple[int, UUID]] = []  # (position, id) heap of all not yet emitted
        self._done: set[UUID] = set()
        self._maybe_final: UUID | None = None  # failed: final unless a retry follows
        self.events = 0

    def add(self, event: Any, position: int) -> list[Submission]:
        """Fold one event of the log; the submissions that can now be emitted, in order."""
        self.events += 1
        task_id: UUID = event.originator_id
        if self._maybe_final is not None and self._maybe_final != task_id:
            self._close(self._maybe_final)
        name = event_name(type(event))
        if name == "TaskEnqueued":
            self._enqueued(event, position)
        else:
            self._other(self._open.get(task_id), name, event)
        return self._emit()

    def finish(self) -> list[Submission]:
        """The window's end: every submission still held, in enqueue order (open ones as
        they stood)."""
        if self._maybe_final is not None:
            self._close(self._maybe_final)
        self._done.update(self._open)
        return self._emit()

    def _enqueued(self, event: Any, position: int) -> None:
        retry = event.retry or {}
        self._open[event.originator_id] = Submission(
            task_id=event.originator_id,
            position=position,
            type_name=event.type_name,
            queue=event.queue,
            priority=int(event.priority),
            lane=event.lane,
            args=dict(event.args or {}),
            enqueued=epoch(event.timestamp),
            run_at=None if event.run_at is None else epoch(event.run_at),
            depends_on=tuple(event.depends_on or ()),
            max_attempts=int(retry.get("max_attempts", 1)),
        )
        heapq.heappush(self._ready, (position, event.originator_id))

    def _other(self, sub: Submission | None, name: str, event: Any) -> None:
        if sub is None:  # enqueued before the window: not part of the workload
            return
        at = epoch(event.timestamp)
        if name == "TaskStarted":
            sub.attempts.append(RecordedAttempt(started=at))
        elif name in ENDS and sub.attempts and sub.attempts[-1].ended is None:
            attempt = sub.attempts[-1]
            attempt.ended, attempt.outcome = at, ENDS[name]
            attempt.error_class = getattr(event, "error_class", None)
            attempt.timeout_kind = getattr(event, "kind", None)
            attempt.retryable = bool(getattr(event, "retryable", True))
            if name == "TaskSucceeded":
                self._end(sub, "succeeded", at)
            else:
                sub.final, sub.final_at = "failed", at
                self._maybe_final = sub.task_id
        elif name == "TaskTimedOut":  # timed out waiting to start (or for signals)
            sub.final, sub.final_at = "timed_out", at
            self._maybe_final = sub.task_id
        elif name == "TaskRetryScheduled":
            sub.final = sub.final_at = None
            if self._maybe_final == sub.task_id:
                self._maybe_final = None
        elif name in FINAL:
            self._end(sub, FINAL[name], at)
        elif name == "TaskDebounced":
            run_at = getattr(event, "run_at", None)
            sub.run_at = None if run_at is None else epoch(run_at)
        elif name in ("TaskAwaitingSignals", "TaskChildrenSpawned"):
            sub.waits_for_signals = True

    def _end(self, sub: Submission, final: str, at: float) -> None:
        sub.final, sub.final_at = final, at
        self._close(sub.task_id)

    def _close(self, task_id: UUID) -> None:
        if self._maybe_final == task_id:
            self._maybe_final = None
        if task_id in self._open:
            self._done.add(task_id)

    def _emit(self) -> list[Submission]:
        out: list[Submission] = []
        while self._ready and self._ready[0][1] in self._done:
            _, task_id = heapq.heappop(self._ready)
            self._done.discard(task_id)
            out.append(self._open.pop(task_id))
        return out

    @property
    def held(self) -> int:
        """Submissions held in memory (open, or behind an open one)."""
        return len(self._open)
