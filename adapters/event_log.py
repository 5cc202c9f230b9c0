"""Reading the global event log with filters (type, task, principal) and a position cursor.

Blocking (call from a thread). A page reads at most ``SCAN_WINDOW`` positions past
``after``; ``next_after`` tells where the next page starts, so a filter that matches
rarely still answers quickly and the caller pages on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from execution_ledger.adapters.postgres.event_store import EventStore, RecordedEvent
from execution_ledger.adapters.views import event_principal
from execution_ledger.domain.access import AccessDenial
from execution_ledger.domain.bulk import BulkAction
from execution_ledger.domain.errors import InvalidQuery
from execution_ledger.domain.queue import Queue
from execution_ledger.domain.registry_history import RegistryHistory
from execution_ledger.domain.schedule_control import ScheduleControl
from execution_ledger.domain.task import Task
from execution_ledger.projections.base import Event

log = logging.getLogger(__name__)

SCAN_WINDOW = 10_000
MAX_EVENTS_PAGE = 1000
MAX_POSITION = 2**63 - 1  # log positions are bigint
AGGREGATES: tuple[type[Aggregate], ...] = (
    Task,
    Queue,
    ScheduleControl,
    AccessDenial,
    BulkAction,
    RegistryHistory,
)


def _topics_by_event_name() -> dict[str, list[str]]:
    topics: dict[str, list[str]] = {}
    for aggregate in AGGREGATES:
        for name, value in vars(aggregate).items():
            if (
                isinstance(value, type)
                and issubclass(value, Aggregate.Event)
                and name not in ("Event", "Created")
            ):
                topics.setdefault(name, []).append(get_topic(value))
    return topics


TOPICS_BY_EVENT_NAME = _topics_by_event_name()


@dataclass(frozen=True)
class EventFilter:
    types: tuple[str, ...] = ()
    task_id: UUID | None = None
    principal: str | None = None
    since: datetime | None = None  # events at or after this time
    until: datetime | None = None  # events at or before this time

    @property
    def reads_more_than_it_returns(self) -> bool:
        return self.principal is not None or self.since is not None or self.until is not None

    def __post_init__(self) -> None:
        for name in self.types:
            if name not in TOPICS_BY_EVENT_NAME:
                known = ", ".join(sorted(TOPICS_BY_EVENT_NAME))
                raise InvalidQuery(f"unknown event type {name!r} (known: {known})")

    def matches(self, recorded: RecordedEvent) -> bool:
        event = recorded.event
        if self.types and type(event).__name__ not in self.types:
            return False
        if self.since is not None and event.timestamp < self.since:
            return False
        if self.until is not None and event.timestamp > self.until:
            return False
        return self.principal is None or event_principal(event) == self.principal


@dataclass(frozen=True)
class EventPage:
    events: list[RecordedEvent]
    next_after: int
    head: int


def read_events(store: EventStore, after: int, limit: int, where: EventFilter) -> EventPage:
    """Matching events with ``after < position``, oldest first, at most ``limit``."""
    head = store.head_position()
    if where.task_id is not None:
        candidates = [e for e in store.history(where.task_id) if e.position > after]
        read_up_to = max([after, head, *(e.position for e in candidates)])
        head = read_up_to
    else:
        read_up_to = min(head, after + SCAN_WINDOW)
        candidates = []
        if read_up_to > after:
            topics = [t for name in where.types for t in TOPICS_BY_EVENT_NAME[name]]
            fetch = SCAN_WINDOW if where.reads_more_than_it_returns else limit
            notifications = store.recorder.select_notifications(
                after, fetch, stop=read_up_to, topics=topics, inclusive_of_start=False
            )
            candidates = [
                RecordedEvent(n.id, event)
                for n in notifications
                if (event := _decoded(store, n)) is not None
            ]
            if len(notifications) == fetch:
                read_up_to = notifications[-1].id
    matching = [e for e in candidates if where.matches(e)]
    if len(matching) > limit:
        matching = matching[:limit]
        read_up_to = matching[-1].position
    return EventPage(matching, max(after, read_up_to), head)


def _decoded(store: EventStore, notification: Notification) -> Event | None:
    """The event of a stored row, or None (with a warning) for a row that does not decode:
    the event list and stream pass over it, as the projections do (``ledger audit verify``
    reports it)."""
    try:
        return store.to_event(notification)
    except Exception as error:
        log.warning(
            "event list: the event at position %d does not decode (%s: %s); passed over",
            notification.id,
            type(error).__name__,
            error,
        )
        return None
