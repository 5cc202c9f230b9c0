"""JSON representations the API returns: a task, a task-view row, an event, a task type."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from aiohttp import web

from execution_ledger.adapters.postgres.event_store import RecordedEvent
from execution_ledger.domain.errors import TaskNotFound
from execution_ledger.domain.registry import Registry, TaskType
from execution_ledger.domain.task import Task, TaskState, event_name
from execution_ledger.domain.timeouts import resolve_timeouts

_TERMINAL_EVENTS = {"TaskSucceeded", "TaskFailed", "TaskTimedOut", "TaskCancelled", "TaskSkipped"}
_EVENT_META = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def _default(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_default, separators=(",", ":"))


def json_response(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, text=dumps(value), content_type="application/json", headers=headers
    )


# -- tasks ----------------------------------------------------------------------------


def fold_task(events: Sequence[RecordedEvent]) -> Task:
    """The Task aggregate from its history (``TaskNotFound`` if these are not a task's)."""
    if not events or type(events[0].event).__qualname__ != "Task.TaskEnqueued":
        raise TaskNotFound("no such task")
    task: Any = None
    for recorded in events:
        task = recorded.event.mutate(task)
    assert isinstance(task, Task)
    return task


def task_json(task: Task, events: Sequence[RecordedEvent]) -> dict[str, Any]:
    """One task, current to its last event (read from the log, not a projection)."""
    started_at = None
    finished_at = None
    for recorded in events:
        name = event_name(type(recorded.event))
        if name == "TaskStarted":
            started_at = recorded.event.timestamp
        if name in _TERMINAL_EVENTS:
            finished_at = recorded.event.timestamp
    return {
        "id": task.id,
        "type": task.type_name,
        "adapter": task.adapter,
        "queue": task.queue,
        "priority": task.priority,
        "lane": task.lane,
        "state": task.state.value,
        "principal": task.principal,
        "role": task.role,
        "tags": list(task.tags),
        "args": task.args,
        "result": task.result,
        "error": _ending(task, events) or task.error,
        "attempts": task.attempts,
        "max_attempts": task.max_attempts,
        "worker": task.worker,
        "timeout_kind": task.timeout_kind,
        "depends_on": list(task.depends_on),
        "graph_id": task.graph_id,
        "ref": task.ref,
        "idempotency_key": task.idempotency_key,
        "timeouts": task.timeouts,
        "run_at": task.run_at,
        "enqueued_at": events[0].event.timestamp,
        "started_at": started_at,
        "finished_at": finished_at if task.state.is_terminal else None,
        "lease_expires_at": task.lease_expires_at,
        "updated_at": events[-1].event.timestamp,
        "version": task.version,
        "position": events[-1].position,
        "registry_version": {
            "enqueued": task.enqueued_registry_version,
            "run": task.run_registry_version,
        },
    }


def _ending(task: Task, events: Sequence[RecordedEvent]) -> dict[str, Any] | None:
    """Why a cancelled or skipped task ended (as the task view records it)."""
    last: Any = events[-1].event
    if task.state is TaskState.CANCELLED and event_name(type(last)) == "TaskCancelled":
        return {"class": "Cancelled", "message": last.reason or "cancelled", "by": last.by}
    if task.state is TaskState.SKIPPED and event_name(type(last)) == "TaskSkipped":
        return {"class": "Skipped", "message": last.reason, "dependency": last.dependency}
    return None


def task_row_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the task view (lists), in the same shape as ``task_json``."""
    return {
        "id": row["task_id"],
        "type": row["type_name"],
        "adapter": row["adapter"],
        "queue": row["queue"],
        "priority": row["priority"],
        "lane": row["lane"],
        "state": row["state"],
        "principal": row["principal"],
        "role": row["role"],
        "tags": list(row["tags"]),
        "args": row["args"],
        "result": row["result"],
        "error": row["error"],
        "attempts": row["attempts"],
        "max_attempts": row["max_attempts"],
        "worker": row["worker"],
        "timeout_kind": row["timeout_kind"],
        "depends_on": list(row["depends_on"]),
        "graph_id": row["graph_id"],
        "ref": row["ref"],
        "idempotency_key": row["idempotency_key"],
        "timeouts": row["timeouts"],
        "run_at": row["run_at"],
        "enqueued_at": row["enqueued_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"] if TaskState(row["state"]).is_terminal else None,
        "lease_expires_at": row["lease_expires_at"],
        "updated_at": row["updated_at"],
        "version": row["version"],
        "position": row["position"],
        "held_by": row.get("held_by"),  # a rate limit's reason, while it holds the task back
    }


# -- events ---------------------------------------------------------------------------


def event_principal(event: Any) -> str:
    """Who caused an event: the enqueuer, the person who cancelled, retried or paused, else
    ``system`` (workers, the watchdog, the cascade)."""
    for field in ("principal", "by"):
        value = getattr(event, field, None)
        if isinstance(value, str) and value:
            return value
    return "system"


def event_json(recorded: RecordedEvent) -> dict[str, Any]:
    event = recorded.event
    qualname = type(event).__qualname__
    return {
        "position": recorded.position,
        "type": event_name(type(event)),
        "aggregate": qualname.split(".", 1)[0],
        "aggregate_id": event.originator_id,
        "version": event.originator_version,
        "time": event.timestamp,
        "principal": event_principal(event),
        "data": {k: v for k, v in vars(event).items() if k not in _EVENT_META},
    }


# -- the registry ---------------------------------------------------------------------


def task_type_json(registry: Registry, task_type: TaskType, may_enqueue: bool) -> dict[str, Any]:
    queue = registry.queue(task_type.queue)
    overrides = task_type.timeouts
    resolved = resolve_timeouts(overrides, queue.timeouts, default=registry.default_timeouts)
    return {
        "name": task_type.name,
        "description": task_type.description,
        "adapter": task_type.adapter,
        "queue": task_type.queue,
        "priority": task_type.priority,
        "lane": task_type.lane,
        "tags": list(task_type.tags),
        "timeouts": resolved.as_dict(),
        "retry": task_type.retry.as_dict(),
        "roles": list(task_type.roles),
        "schema": task_type.schema,
        "learn_hook": task_type.learn_hook,
        "may_enqueue": may_enqueue,
    }
