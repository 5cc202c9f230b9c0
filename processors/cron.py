"""The cron scheduler: each tick of each schedule enqueues exactly one task.

Every node may run it. A tick's task carries the idempotency key ``schedule:NAME:TICK``, so
however many schedulers see the same tick, one task is created; the others get it back.
The last moment each schedule was looked at is kept, so ticks missed during downtime are
found and fired by the schedule's catch-up rule (none, latest, all up to a bound).

The schedules are the registry file's and, read again each pass, the run-time ones (a
``ScheduleBook``; a file schedule's name wins). A schedule whose overlap policy is not
``allow`` has each tick decided once by its ``TickGuard`` (enqueue, or skip while the last
run is still going); ``allow`` enqueues as it always did.

Each tick's enqueue runs inside ``trace_tick(schedule name)`` (``adapters/telemetry`` gives
the ``ledger.enqueue`` span of source ``cron`` when traces are on; nothing otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from execution_ledger.domain.schedule_definitions import tick_request
from execution_ledger.domain.schedules import Overlap, Schedule
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Look:
    """When a schedule was last looked at (None: never), and whether it is paused now."""

    at: datetime | None
    paused: bool = False


class ScheduleClock(Protocol):
    def looks(self) -> dict[str, Look]: ...

    def looked(self, name: str, at: datetime) -> None: ...


class Enqueuer(Protocol):
    def enqueue_once(self, request: TaskRequest) -> tuple[Task, bool]: ...


@dataclass(frozen=True)
class TickOutcome:
    """What became of a guarded tick: its task (None: skipped, or decided elsewhere)."""

    task_id: UUID | None
    created: bool
    skipped: bool = False


class ScheduleBook(Protocol):
    def defined(self) -> Mapping[str, Schedule]: ...


class TickGuard(Protocol):
    def fire(self, schedule: Schedule, tick: datetime, request: TaskRequest) -> TickOutcome: ...


@dataclass(frozen=True)
class Fired:
    schedule: str
    tick: datetime
    task_id: UUID | None  # None: the tick was skipped (or decided by another node)
    created: bool
    skipped: bool = False


def untraced(schedule: str) -> AbstractContextManager[object]:
    return nullcontext()


class CronScheduler:
    def __init__(
        self,
        schedules: Mapping[str, Schedule],
        clock_store: ScheduleClock,
        ledger: Enqueuer,
        clock: Callable[[], datetime],
        book: ScheduleBook | None = None,
        guard: TickGuard | None = None,
        trace_tick: Callable[[str], AbstractContextManager[object]] = untraced,
    ) -> None:
        self.schedules = schedules
        self.clock_store = clock_store
        self.ledger = ledger
        self.clock = clock
        self.book = book
        self.guard = guard
        self.trace_tick = trace_tick

    def current(self) -> dict[str, Schedule]:
        """The schedules of this pass: the run-time ones, then the file's (which win)."""
        runtime = dict(self.book.defined()) if self.book is not None else {}
        return {**runtime, **self.schedules}

    def run_once(self) -> list[Fired]:
        """Fire every due tick of every running schedule; return what was fired."""
        now = self.clock()
        looks = self.clock_store.looks()
        fired: list[Fired] = []
        for schedule in self.current().values():
            look = looks.get(schedule.name, Look(None))
            if look.at is not None and not look.paused:
                fired.extend(self._fire(schedule, schedule.due_ticks(look.at, now)))
            # First sight: from now on (nothing "missed" before it existed). While paused the
            # clock moves on too, so resuming does not catch up the paused time.
            self.clock_store.looked(schedule.name, now)
        return fired

    def _fire(self, schedule: Schedule, ticks: list[datetime]) -> list[Fired]:
        fired = []
        for tick in ticks:
            request = tick_request(schedule, tick)
            with self.trace_tick(schedule.name):
                if schedule.overlap is Overlap.ALLOW or self.guard is None:
                    task, created = self.ledger.enqueue_once(request)
                    outcome = TickOutcome(task.id, created)
                else:
                    outcome = self.guard.fire(schedule, tick, request)
            if outcome.created:
                log.info("schedule %s fired for %s: task %s", schedule.name, tick, outcome.task_id)
            elif outcome.skipped:
                log.info("schedule %s skipped %s: its last run is still going", schedule.name, tick)
            fired.append(
                Fired(schedule.name, tick, outcome.task_id, outcome.created, outcome.skipped)
            )
        return fired
