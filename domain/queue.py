"""The Queue aggregate: pausing and resuming a queue are events, like everything else.

One aggregate per queue name, with a deterministic id, so any node finds it by name.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from execution_ledger.domain.errors import InvalidTransition
from execution_ledger.domain.stored_topics import pin_topics


def queue_id(name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"execution-ledger:queue:{name}")


class Queue(Aggregate):
    class QueueRegistered(Aggregate.Created):
        name: str

    @event(QueueRegistered)
    def __init__(self, id: UUID, name: str) -> None:
        self.name = name
        self.paused = False

    @classmethod
    def register(cls, name: str) -> Queue:
        return cls(id=queue_id(name), name=name)

    class QueuePaused(Aggregate.Event):
        by: str

    def pause(self, by: str) -> None:
        if self.paused:
            raise InvalidTransition(f"queue {self.name!r} is already paused")
        self._paused(by=by)

    @event(QueuePaused)
    def _paused(self, by: str) -> None:
        self.paused = True

    class QueueResumed(Aggregate.Event):
        by: str

    def resume(self, by: str) -> None:
        if not self.paused:
            raise InvalidTransition(f"queue {self.name!r} is not paused")
        self._resumed(by=by)

    @event(QueueResumed)
    def _resumed(self, by: str) -> None:
        self.paused = False


pin_topics(Queue)  # the log's names for these classes (see stored_topics)
