"""The task filter of ``ledger tasks``, ``GET /v1/tasks`` and the bulk actions, read and
checked in one place: a state that exists (naming the valid ones), a declared queue (where
the caller asks for that), enqueue times in ISO 8601 with a zone, a time range that is not
empty. Bad input is an ``InvalidQuery`` (HTTP 400, CLI exit status 2)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from execution_ledger.adapters.postgres.task_queries import TaskFilter
from execution_ledger.domain.errors import InvalidQuery
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.task import TaskState


def check_state(state: str | None) -> None:
    """Refuse a state no task can be in, naming the valid ones."""
    states = [s.value for s in TaskState]
    if state is not None and state not in states:
        raise InvalidQuery(f"unknown state {state!r} (valid: {', '.join(states)})")


def check_queue(registry: Registry, queue: str | None) -> None:
    """Refuse a queue the registry does not declare, naming the declared ones."""
    queues = sorted(registry.queues)
    if queue is not None and queue not in queues:
        raise InvalidQuery(f"unknown queue {queue!r} (valid: {', '.join(queues)})")


def parse_time(text: str | None, name: str) -> datetime | None:
    """An ISO 8601 time with a zone, e.g. ``2026-11-25T09:00:00+00:00`` (``name`` says
    which option or parameter it came from)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidQuery(f"{name} is not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise InvalidQuery(f"{name} needs a time zone (e.g. 2026-01-01T09:00:00+00:00)")
    return moment


def task_filter(
    registry: Registry,
    *,
    state: str | None = None,
    type_name: str | None = None,
    queue: str | None = None,
    lane: str | None = None,
    tag: str | None = None,
    since: str | None = None,
    until: str | None = None,
    text: str | None = None,
    prefix: str = "",
) -> TaskFilter:
    """A checked filter from the words a user gave (times as text; ``prefix`` is how the
    user names the options in messages: ``--`` on the command line)."""
    check_state(state)
    check_queue(registry, queue)
    start, end = parse_time(since, f"{prefix}since"), parse_time(until, f"{prefix}until")
    if start is not None and end is not None and start >= end:
        raise InvalidQuery(
            f"{prefix}since must be before {prefix}until (tasks enqueued in [since, until))"
        )
    return TaskFilter(state, type_name, queue, lane, tag, start, end, text or None)


def filter_json(where: TaskFilter) -> dict[str, Any]:
    """The filter as JSON (the names of ``GET /v1/tasks``' parameters), given fields only."""
    fields = {
        "state": where.state,
        "type": where.type_name,
        "queue": where.queue,
        "lane": where.lane,
        "tag": where.tag,
        "since": where.since.isoformat() if where.since else None,
        "until": where.until.isoformat() if where.until else None,
        "text": where.text,
    }
    return {name: value for name, value in fields.items() if value is not None}


def is_empty(where: TaskFilter) -> bool:
    return not filter_json(where)
