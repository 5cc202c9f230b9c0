"""What the HTTP client returns: typed views of the service's JSON answers.

Each keeps the whole answer in ``raw`` (fields added by a newer service are not lost) and
gives the fields a program reads most as attributes with their Python types (ids as
``UUID``, times as aware ``datetime``s).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "skipped"})


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class TaskView:
    """A task as ``GET /v1/tasks/{id}`` and the task list show it."""

    id: UUID
    type: str
    state: str
    queue: str
    priority: int
    args: Mapping[str, Any]
    result: Any
    error: Any
    attempts: int
    enqueued_at: datetime | None
    updated_at: datetime | None
    raw: Mapping[str, Any] = field(repr=False)
    created: bool = True  # False: an idempotency key's (or singleton's) holder was returned

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def from_json(cls, data: Mapping[str, Any], created: bool = True) -> TaskView:
        return cls(
            id=UUID(str(data["id"])),
            type=str(data["type"]),
            state=str(data["state"]),
            queue=str(data["queue"]),
            priority=int(data["priority"]),
            args=data.get("args") or {},
            result=data.get("result"),
            error=data.get("error"),
            attempts=int(data.get("attempts") or 0),
            enqueued_at=_time(data.get("enqueued_at")),
            updated_at=_time(data.get("updated_at")),
            raw=data,
            created=created,
        )


@dataclass(frozen=True)
class TaskPage:
    """One page of the task list, newest first; ``next_cursor`` asks for the next."""

    tasks: list[TaskView]
    next_cursor: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskPage:
        return cls([TaskView.from_json(t) for t in data["tasks"]], data.get("next_cursor"))


@dataclass(frozen=True)
class EventView:
    """One event of the log (the event list, a task's history, the event stream)."""

    position: int
    type: str
    aggregate: str
    aggregate_id: UUID
    version: int
    time: datetime | None
    principal: str | None
    data: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EventView:
        return cls(
            position=int(data["position"]),
            type=str(data["type"]),
            aggregate=str(data.get("aggregate", "")),
            aggregate_id=UUID(str(data["aggregate_id"])),
            version=int(data["version"]),
            time=_time(data.get("time")),
            principal=data.get("principal"),
            data=data.get("data") or {},
        )


@dataclass(frozen=True)
class EventPage:
    events: list[EventView]
    next_after: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EventPage:
        return cls([EventView.from_json(e) for e in data["events"]], int(data["next_after"]))


@dataclass(frozen=True)
class GraphView:
    """A submitted graph: its id and each ref's task id."""

    graph_id: UUID
    tasks: Mapping[str, UUID]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GraphView:
        return cls(
            UUID(str(data["graph_id"])),
            {ref: UUID(str(task_id)) for ref, task_id in data["tasks"].items()},
        )
