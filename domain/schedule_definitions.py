"""Run-time schedules, the pure rules: a definition checked by the same ``build_schedule``
as a ``[schedules.NAME]`` table, what an update changes, who may manage schedules, the task
a tick enqueues, and what the overlap policy lets a tick do.

A definition is the canonical mapping of a schedule's keys (``definition_of``): what
``ScheduleDefined`` and ``ScheduleUpdated`` record and what every node rebuilds a
``Schedule`` from (``schedule_from``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from execution_ledger.domain.errors import ConfigError, Forbidden, InvalidSchedule
from execution_ledger.domain.registry import NAME_PATTERN, Registry, Role, TaskType
from execution_ledger.domain.schedules import Overlap, Schedule, build_schedule
from execution_ledger.domain.submission import Requester, TaskRequest
from execution_ledger.domain.task import TaskState

SCHEDULE_ADMIN_ROLES = frozenset({"admin"})
MAX_BACKFILL_TICKS = 1000  # ticks one backfill may enqueue
DEFINITION_KEYS = frozenset(
    {"cron", "timezone", "task_type", "args", "catch_up", "max_catch_up", "overlap"}
)
_NOT_STARTED = frozenset({TaskState.BLOCKED, TaskState.SCHEDULED, TaskState.READY})


def definition_of(schedule: Schedule) -> dict[str, Any]:
    """The canonical definition of a schedule: every key, defaults filled in."""
    return {
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "task_type": schedule.task_type,
        "args": dict(schedule.args),
        "catch_up": schedule.catch_up.value,
        "max_catch_up": schedule.max_catch_up,
        "overlap": schedule.overlap.value,
    }


def schedule_from(
    name: str, definition: Mapping[str, Any], task_types: Mapping[str, TaskType]
) -> Schedule:
    """The schedule of a stored definition (``ConfigError`` if this registry cannot run it,
    e.g. its task type is no longer in the file)."""
    return build_schedule(name, definition, ("schedules", name), task_types)


def checked_definition(name: str, spec: Any, task_types: Mapping[str, TaskType]) -> dict[str, Any]:
    """A new or updated definition, checked like a ``[schedules.NAME]`` table; refused with
    ``InvalidSchedule`` naming the key at fault."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidSchedule(f"schedule name {name!r}: expected 1-100 letters, digits or _ . : -")
    if not isinstance(spec, Mapping):
        raise InvalidSchedule("a schedule definition must be a JSON object")
    unknown = sorted(set(spec) - DEFINITION_KEYS)
    if unknown:
        raise InvalidSchedule(
            f"unknown key {unknown[0]!r} (expected some of: {', '.join(sorted(DEFINITION_KEYS))})"
        )
    try:
        return definition_of(schedule_from(name, spec, task_types))
    except ConfigError as error:
        key = error.where[-1] if len(error.where) > 2 else "definition"
        raise InvalidSchedule(f"{key}: {error.reason}") from None


def updated_definition(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The definition after an update: the keys given replace the current ones (``args``
    as a whole)."""
    if not isinstance(patch, Mapping):
        raise InvalidSchedule("a schedule update must be a JSON object")
    if not patch:
        raise InvalidSchedule("an update needs at least one key to change")
    return {**current, **patch}


def check_schedule_rights(
    registry: Registry, requester: Requester, task_type: str | None = None
) -> None:
    """Managing schedules needs the ``admin`` role or a role with ``may_schedule``; naming
    a task type (create, update, backfill) also needs the right to enqueue that type."""
    role = registry.roles.get(requester.role)
    if role is None:
        raise Forbidden(f"unknown role {requester.role!r}")
    if role.name not in SCHEDULE_ADMIN_ROLES and not role.may_schedule:
        raise Forbidden(f"role {role.name!r} may not manage schedules")
    if task_type is not None and not _may_enqueue(role, registry.task_type(task_type)):
        raise Forbidden(f"role {role.name!r} may not enqueue tasks of type {task_type!r}")


def _may_enqueue(role: Role, task_type: TaskType | None) -> bool:
    return task_type is None or (role.name in task_type.roles and role.may_enqueue(task_type))


def tick_request(schedule: Schedule, tick: datetime, backfill: bool = False) -> TaskRequest:
    """The task of one tick: keyed by schedule and tick (one task, whoever enqueues it),
    tagged ``schedule:NAME`` (and ``backfill``); with ``queue_one`` in lane
    ``schedule:NAME``, so a waiting run starts only once the running one ended."""
    tags = (f"schedule:{schedule.name}", "backfill") if backfill else (f"schedule:{schedule.name}",)
    lane = f"schedule:{schedule.name}" if schedule.overlap is Overlap.QUEUE_ONE else None
    return TaskRequest(
        schedule.task_type,
        dict(schedule.args),
        idempotency_key=schedule.idempotency_key(tick),
        tags=tags,
        lane=lane,
    )


def overlap_allows(overlap: Overlap, previous: TaskState | None) -> bool:
    """Whether a tick may enqueue, given the state of the schedule's last run (None: none
    known). ``skip``: only once that run ended; ``queue_one``: unless it has not started
    yet (one run waits at most); ``allow``: always."""
    if overlap is Overlap.ALLOW or previous is None or previous.is_terminal:
        return True
    if overlap is Overlap.SKIP:
        return False
    return previous not in _NOT_STARTED


def check_backfill_range(since: datetime, until: datetime) -> None:
    if since.tzinfo is None or until.tzinfo is None:
        raise InvalidSchedule("--since and --until need a time zone (e.g. +00:00 or Z)")
    if until < since:
        raise InvalidSchedule("the backfill range ends before it starts (until < since)")
