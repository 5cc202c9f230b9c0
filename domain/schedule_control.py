"""The ScheduleControl aggregate: pausing and resuming a cron schedule are events.

One aggregate per schedule name, with a deterministic id, so any node finds it by name.
The schedule itself (cron, type, args) lives in the registry; this is its on/off switch.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidTransition


def schedule_control_id(name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"execution-ledger:schedule:{name}")


class ScheduleControl(Aggregate):
    class ScheduleRegistered(Aggregate.Created):
        name: str

    @event(ScheduleRegistered)
    def __init__(self, id: UUID, name: str) -> None:
        self.name = name
        self.paused = False

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
