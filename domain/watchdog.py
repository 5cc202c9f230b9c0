"""What the timeout watchdog decides: which fired timeouts still hold, and what they record.

The watchdog (``adapters/postgres/timeouts.py``) finds the timeouts that fired, one kind
at a time, broadest kind first (``BROADEST_FIRST``); a task found by several keeps its
broadest (``one_per_task``). Each is then decided on the task as loaded at that moment
(``record_fired``): it may have moved on since it was found (its attempt ended, it started,
it got the signal it waited for), and then nothing is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from execution_ledger.domain.outcomes import record_timeout
from execution_ledger.domain.task import Task, TaskState
from execution_ledger.domain.timeouts import TimeoutKind

BROADEST_FIRST: Final = (
    TimeoutKind.SIGNAL_WAIT,
    TimeoutKind.SCHEDULE_TO_CLOSE,
    TimeoutKind.SCHEDULE_TO_START,
    TimeoutKind.START_TO_CLOSE,
    TimeoutKind.HEARTBEAT,
)


@dataclass(frozen=True)
class FiredTimeout:
    task_id: UUID
    kind: TimeoutKind
    attempt: int | None  # the running attempt it is about, if any


@dataclass(frozen=True)
class TimeoutRecorded:
    """A fired timeout recorded on its task (``TaskTimedOut``, and a retry if allowed)."""

    stopped_attempt: bool  # it ended a running attempt: its row goes, its worker is told


def one_per_task(fired: Iterable[FiredTimeout]) -> list[FiredTimeout]:
    """The first timeout found for each task (found broadest kind first: the broadest)."""
    first: dict[UUID, FiredTimeout] = {}
    for timeout in fired:
        first.setdefault(timeout.task_id, timeout)
    return list(first.values())


def still_holds(task: Task, fired: FiredTimeout) -> bool:
    """Whether ``fired`` is still true of ``task`` as loaded now: the attempt it is about
    still runs, the task has not ended, a schedule-to-start task has not started, a task
    waiting for a signal still waits for one."""
    running = task.state is TaskState.RUNNING
    if fired.attempt is not None and not (running and task.attempts == fired.attempt):
        return False  # that attempt already ended
    if task.state.is_terminal:
        return False
    if fired.kind is TimeoutKind.SCHEDULE_TO_START and task.state not in (
        TaskState.READY,
        TaskState.SCHEDULED,
    ):
        return False
    if fired.kind is TimeoutKind.SIGNAL_WAIT:
        return task.state is TaskState.WAITING and bool(task.awaited_signals)
    return True


def record_fired(
    task: Task, fired: FiredTimeout, now: datetime, jitter: Callable[[], float]
) -> TimeoutRecorded | None:
    """Give ``task`` the events of ``fired`` if it still holds (None: nothing recorded);
    ``jitter`` draws a retry's back-off."""
    if not still_holds(task, fired):
        return None
    stopped = task.state is TaskState.RUNNING
    record_timeout(task, fired.kind, now, jitter())
    return TimeoutRecorded(stopped_attempt=stopped)
