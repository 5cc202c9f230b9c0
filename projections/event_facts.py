"""What the dataset fold reads of a task event: ``EventFacts``, and ``event_facts`` to take
them from a domain event.

Sizes are bytes of a value as the event store writes it (``stored_size``); exit codes and
HTTP statuses are kept only as whole numbers of at most 18 digits. The replay's page query
(``adapters/dataset/log_reader.py``) reads the same facts from the stored JSON and must
agree with these; tests/adapters/test_replay.py compares the two.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar
from uuid import UUID

from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, UUIDAsHex

from execution_ledger.projections.base import Event, is_task_event, kind

IdT = TypeVar("IdT")  # a task id: UUID, or str in the replay's text form
TimeT = TypeVar("TimeT")  # a time: datetime, or UTC ISO str in the replay's text form


class EventFacts(NamedTuple, Generic[IdT, TimeT]):
    """What the fold reads of one task event, flat: fields an event does not have are None.

    ``event_facts`` makes them from a domain event (the live projection, and a replay's
    pages read through the library, put in the text form by
    ``adapters/dataset/text_form.py``). The replay's page query reads the same facts straight
    from the stored JSON as text lines (``adapters/dataset/log_reader.py``) and must agree.
    Sizes are bytes of the value as stored: the library's compact UTF-8 JSON. Typed as
    ``EventFacts[UUID, datetime]`` from a domain event, ``EventFacts[str, str]`` as text.
    """

    position: int
    name: str  # the event's short name, e.g. TaskStarted
    task_id: IdT
    timestamp: TimeT
    type_name: str | None = None  # TaskEnqueued
    adapter: str | None = None
    queue: str | None = None
    lane: str | None = None
    principal: str | None = None
    role: str | None = None
    initial_state: str | None = None
    run_at: TimeT | None = None
    depends_on: list[IdT] | None = None
    args_bytes: int | None = None
    attempt: int | None = None  # TaskStarted, TaskSucceeded, TaskFailed, TaskTimedOut
    worker: str | None = None  # TaskStarted
    error_class: str | None = None  # TaskFailed
    timeout_kind: str | None = None  # TaskTimedOut
    retry_at: TimeT | None = None  # TaskRetryScheduled; a TaskDebounced's run_at
    result_bytes: int | None = None  # TaskSucceeded
    exit_code: int | None = None  # TaskSucceeded, TaskFailed (from details)
    http_status: int | None = None


_LARGEST_CODE = 10**18  # exit codes and statuses past this are not kept (nor by the SQL)


def _library_transcoder() -> JSONTranscoder:
    """The event store's JSON encoding (the library's default transcodings)."""
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DecimalAsStr())
    transcoder.register(DatetimeAsISO())
    return transcoder


_encode = _library_transcoder().encode


def stored_size(value: Any) -> int:
    """Bytes of ``value`` as the event store writes it (compact UTF-8 JSON)."""
    return len(_encode(value))


def _code(details: Mapping[str, Any] | None, key: str) -> int | None:
    value = (details or {}).get(key)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < _LARGEST_CODE:
        return value
    return None


def event_facts(event: Event, position: int) -> EventFacts[UUID, datetime] | None:
    """The fold's view of a domain event; None for events of other aggregates."""
    if not is_task_event(event):
        return None
    name = kind(event)
    e: Any = event
    base = (position, name, e.originator_id, e.timestamp)
    if name == "TaskEnqueued":
        return EventFacts(
            *base,
            type_name=e.type_name,
            adapter=e.adapter,
            queue=e.queue,
            lane=e.lane,
            principal=e.principal,
            role=e.role,
            initial_state=e.initial_state,
            run_at=e.run_at,
            depends_on=list(e.depends_on),
            args_bytes=stored_size(e.args),
        )
    if name == "TaskStarted":
        return EventFacts(*base, attempt=e.attempt, worker=e.worker)
    if name == "TaskSucceeded":
        return EventFacts(
            *base,
            attempt=e.attempt,
            result_bytes=stored_size(e.result),
            exit_code=_code(e.details, "exit_code"),
            http_status=_code(e.details, "http_status"),
        )
    if name == "TaskFailed":
        return EventFacts(
            *base,
            attempt=e.attempt,
            error_class=e.error_class,
            exit_code=_code(e.details, "exit_code"),
            http_status=_code(e.details, "http_status"),
        )
    if name == "TaskTimedOut":
        return EventFacts(*base, attempt=e.attempt, timeout_kind=e.kind)
    if name == "TaskRetryScheduled":
        return EventFacts(*base, retry_at=e.retry_at)
    if name == "TaskDebounced":  # its start moved on: read as the new ``retry_at``
        return EventFacts(*base, retry_at=e.run_at)
    return EventFacts(*base)
