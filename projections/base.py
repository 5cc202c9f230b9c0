"""The projection contract: tables it owns, how to create and drop them, how to apply an event.

The runner (in ``adapters.postgres``) feeds events in log order, a batch per transaction,
and records the position read in that same transaction: a crash never double-counts or skips.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import psycopg
from eventsourcing.domain import DomainEventProtocol
from psycopg import sql

from execution_ledger.domain.task import event_name

Cursor = psycopg.Cursor[Any]


class Event(DomainEventProtocol[UUID], Protocol):
    """An event of the ledger's log: each is an ``Aggregate.Event`` of one of the ledger's
    aggregates, so it carries its ``timestamp`` and can ``mutate`` its aggregate (the
    library's ``DomainEventProtocol`` promises neither)."""

    @property
    def timestamp(self) -> datetime: ...

    def mutate(self, aggregate: Any) -> Any:
        """The aggregate after this event (``None`` in: a new one, for a created event)."""



class Projection(Protocol):
    name: str

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables it owns (dropped by a rebuild)."""

    def create(self, cursor: Cursor) -> None:
        """Create the tables if they do not exist."""

    def apply(self, cursor: Cursor, event: Event, position: int) -> list[Any]:
        """Fold one event into the tables; return changes a reactor may act on."""


def is_task_event(event: Event) -> bool:
    """True for the Task aggregate's events (the log also holds e.g. queue events)."""
    return type(event).__qualname__.startswith("Task.")


def kind(event: Event) -> str:
    """The event's short name, e.g. ``TaskStarted``."""
    return event_name(type(event))


def drop_tables(cursor: Cursor, schema: str, tables: tuple[str, ...]) -> None:
    for table in tables:
        cursor.execute(
            sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(schema, table))
        )
