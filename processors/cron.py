"""The cron scheduler: each tick of each schedule enqueues exactly one task.

Every node may run it. A tick's task carries the idempotency key ``schedule:NAME:TICK``, so
however many schedulers see the same tick, one task is created; the others get it back.
The last moment each schedule was looked at is kept, so ticks missed during downtime are
found and fired by the schedule's catch-up rule (none, latest, all up to a bound).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from domain.schedules import Schedule
from domain.submission import TaskRequest
from domain.task import Task

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
class Fired:
    schedule: str
    tick: datetime
    task_id: UUID
    created: bool


class CronScheduler:
    def __init__(
        self,
        schedules: Mapping[str, Schedule],
        clock_store: ScheduleClock,
        ledger: Enqueuer,
        clock: Callable[[], datetime],
    ) -> None:
        self.schedules = schedules
        self.clock_store = clock_store
        self.ledger = ledger
        self.clock = clock

    def run_once(self) -> list[Fired]:
        """Fire every due tick of every running schedule; return what was fired."""
        now = self.clock()
        looks = self.clock_store.looks()
        fired: list[Fired] = []
        for schedule in self.schedules.values():
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
            request = TaskRequest(
                schedule.task_type,
                dict(schedule.args),
                idempotency_key=schedule.idempotency_key(tick),
                tags=(f"schedule:{schedule.name}",),
            )
            task, created = self.ledger.enqueue_once(request)
            if created:
                log.info("schedule %s fired for %s: task %s", schedule.name, tick, task.id)
            fired.append(Fired(schedule.name, tick, task.id, created))
        return fired
