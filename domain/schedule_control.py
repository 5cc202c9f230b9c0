"""The ScheduleControl aggregate: pausing and resuming a cron schedule are events, and so
are defining, updating, deleting and backfilling a run-time schedule.

One aggregate per schedule name, with a deterministic id, so any node finds it by name.
A file schedule (``[schedules.NAME]``) lives in the registry; this is its on/off switch.
A run-time schedule's definition (the same keys as a ``[schedules.NAME]`` table, checked by
``domain/schedule_definitions.py`` before it gets here) lives in its events.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from execution_ledger.domain.errors import InvalidTransition, UnknownSchedule
from execution_ledger.domain.stored_topics import pin_topics


def schedule_control_id(name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"execution-ledger:schedule:{name}")


class ScheduleControl(Aggregate):
    class ScheduleRegistered(Aggregate.Created):
        name: str

    @event(ScheduleRegistered)
    def __init__(self, id: UUID, name: str) -> None:
        self.name = name
        self.paused = False
        self.definition: dict[str, Any] | None = None  # None: no run-time schedule

    @classmethod
    def register(cls, name: str) -> ScheduleControl:
        return cls(id=schedule_control_id(name), name=name)

    class SchedulePaused(Aggregate.Event):
        by: str

    def pause(self, by: str) -> None:
        if self.paused:
            raise InvalidTransition(f"schedule {self.name!r} is already paused")
        self._paused(by=by)

    @event(SchedulePaused)
    def _paused(self, by: str) -> None:
        self.paused = True

    class ScheduleResumed(Aggregate.Event):
        by: str

    def resume(self, by: str) -> None:
        if not self.paused:
            raise InvalidTransition(f"schedule {self.name!r} is not paused")
        self._resumed(by=by)

    @event(ScheduleResumed)
    def _resumed(self, by: str) -> None:
        self.paused = False

    class ScheduleDefined(Aggregate.Event):
        definition: dict[str, Any]
        by: str

    def define(self, definition: Mapping[str, Any], by: str) -> None:
        if self.definition is not None:
            raise InvalidTransition(f"schedule {self.name!r} already exists")
        self._defined(definition=dict(definition), by=by)

    @event(ScheduleDefined)
    def _defined(self, definition: dict[str, Any], by: str) -> None:
        self.definition = definition
        self.paused = False

    class ScheduleUpdated(Aggregate.Event):
        definition: dict[str, Any]
        changes: dict[str, list[Any]]  # key -> [old value, new value]
        by: str

    def update(self, definition: Mapping[str, Any], by: str) -> dict[str, list[Any]]:
        """Record the new definition; returns what changed (nothing: nothing is recorded)."""
        current = self._defined_or_refuse()
        changes = {
            key: [current.get(key), definition.get(key)]
            for key in sorted(set(current) | set(definition))
            if current.get(key) != definition.get(key)
        }
        if changes:
            self._updated(definition=dict(definition), changes=changes, by=by)
        return changes

    @event(ScheduleUpdated)
    def _updated(self, definition: dict[str, Any], changes: dict[str, list[Any]], by: str) -> None:
        self.definition = definition

    class ScheduleDeleted(Aggregate.Event):
        by: str

    def delete(self, by: str) -> None:
        self._defined_or_refuse()
        self._deleted(by=by)

    @event(ScheduleDeleted)
    def _deleted(self, by: str) -> None:
        self.definition = None
        self.paused = False

    class ScheduleBackfilled(Aggregate.Event):
        since: datetime
        until: datetime
        ticks: int  # ticks in the range
        enqueued: int  # of them, tasks created now (the others were enqueued before)
        by: str

    def backfilled(
        self, since: datetime, until: datetime, ticks: int, enqueued: int, by: str
    ) -> None:
        self._backfilled(since=since, until=until, ticks=ticks, enqueued=enqueued, by=by)

    @event(ScheduleBackfilled)
    def _backfilled(
        self, since: datetime, until: datetime, ticks: int, enqueued: int, by: str
    ) -> None:
        pass

    def _defined_or_refuse(self) -> dict[str, Any]:
        if self.definition is None:
            raise UnknownSchedule(f"no run-time schedule {self.name!r}")
        return self.definition


pin_topics(ScheduleControl)  # the log's names for these classes (see stored_topics)
