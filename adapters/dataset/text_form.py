"""The replay's text form of a row: task ids as text, times as UTC ISO text with
microseconds (``2026-11-25T15:36:01.051610+00:00``), numbers as numbers.

A replay folds and writes in this form because the log's pages arrive as text
(``adapters/dataset/log_reader.py``): no UUID or datetime is built per event, and the
writers copy ids and times as they are. Times of that one fixed width compare in time
order as text, and ``iso_seconds_between`` measures them, so ``AttemptFold`` runs on them
unchanged. ``typed_row`` turns a row back into UUIDs and datetimes (``Replay.pages``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from execution_ledger.projections.attempt_fold import AttemptRow, seconds_between
from execution_ledger.projections.event_facts import EventFacts

_from_iso = datetime.fromisoformat


def iso_time(moment: datetime) -> str:
    """``2026-11-25T15:36:01.051610+00:00``: UTC, always with microseconds."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


def iso_seconds_between(start: str, end: str) -> float:
    """``end - start`` in seconds for two ``iso_time`` texts, exact to the microsecond (the
    value ``seconds_between`` gives for the datetimes)."""
    if start[:19] == end[:19]:  # the same second: only the microseconds differ
        return (int(end[20:26]) - int(start[20:26])) / 1_000_000
    return seconds_between(_from_iso(start), _from_iso(end))


def text_facts(event: EventFacts[UUID, datetime]) -> EventFacts[str, str]:
    """Facts of a domain event (``projections.event_facts.event_facts``) in the text form."""
    run_at, retry_at, depends_on = event.run_at, event.retry_at, event.depends_on
    retyped: EventFacts[Any, Any] = event  # the same tuple, its ids and times replaced below
    return retyped._replace(
        task_id=str(event.task_id),
        timestamp=iso_time(event.timestamp),
        run_at=None if run_at is None else iso_time(run_at),
        retry_at=None if retry_at is None else iso_time(retry_at),
        depends_on=None if depends_on is None else [str(d) for d in depends_on],
    )


def typed_row(row: AttemptRow[str, str]) -> AttemptRow[UUID, datetime]:
    """A row in the text form with its id and times as a UUID and datetimes."""
    ready_at = row.ready_at
    retyped: AttemptRow[Any, Any] = row  # the same tuple, its id and times replaced below
    return retyped._replace(
        task_id=UUID(row.task_id),
        enqueued_at=_from_iso(row.enqueued_at),
        ready_at=None if ready_at is None else _from_iso(ready_at),
        started_at=_from_iso(row.started_at),
        finished_at=_from_iso(row.finished_at),
    )
