"""What the ways in show: the JSON of a task (from its events, or a task-view row), a page of
tasks, an event, a task type and a refusal, written by one encoder (``json_default``).

The HTTP API, the NATS ingress and egress and ``ledger ... --json`` (local or ``--url``) all
render through here, so a task reads the same whichever way it is asked for. How they say
no is ``adapters/refusals.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from execution_ledger.adapters.postgres.event_store import RecordedEvent
from execution_ledger.domain.registry import Registry, TaskType
from execution_ledger.domain.task import Task, TaskState, event_name
from execution_ledger.domain.timeouts import resolve_timeouts

_TERMINAL_EVENTS = {"TaskSucceeded", "TaskFailed", "TaskTimedOut", "TaskCancelled", "TaskSkipped"}
_EVENT_META = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def json_default(value: Any) -> Any:
    """The one encoder of values JSON does not know (ids, times, sets, decimals)."""
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
    """Compact JSON: what the HTTP API and NATS send."""
    return json.dumps(value, default=json_default, separators=(",", ":"))


def pretty(value: Any) -> str:
    """The same JSON indented, keys sorted: what ``ledger ... --json`` prints."""
    return json.dumps(value, default=json_default, indent=2, sort_keys=True)


def compact(value: Any) -> str:
    """The same JSON on one line, keys sorted: a value inside a line of text."""
    return json.dumps(value, default=json_default, sort_keys=True)


# -- tasks ----------------------------------------------------------------------------


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


def progress_json(task: Task) -> dict[str, Any] | None:
    """The latest progress its code reported (a ``TaskHeartbeat``), or None."""
    if task.progress is None and task.progress_message is None:
        return None
    return {"fraction": task.progress, "message": task.progress_message}


def workflow_json(task: Task) -> dict[str, Any]:
    return {
        "parent_id": task.parent_id,
        "depth": task.depth,
        "children": list(task.children),
        "children_ended": {str(c): state for c, state in task.children_ended.items()},
        "on_child_failure": task.on_child_failure if task.children else None,
        "awaiting_signals": list(task.awaited_signals),
        "signals": dict(task.signals),
        "inputs": {name: str(dep) for name, dep in (task.inputs or {}).items()},
    }


def task_detail_json(
    task: Task, events: Sequence[RecordedEvent], held_by: str | None
) -> dict[str, Any]:
    """One task as ``GET /v1/tasks/{id}`` and ``ledger show --json`` give it: its JSON plus
    its progress, its workflow part, its coalescing keys and the rate limit holding it."""
    view = task_json(task, events)
    view.update(progress=progress_json(task), workflow=workflow_json(task))
    view.update(singleton_key=task.singleton_key, debounce_key=task.debounce_key)
    view["held_by"] = held_by
    return view


def task_page_json(rows: Sequence[Mapping[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    """A page of the task list (``GET /v1/tasks``, ``ledger tasks --json``)."""
    return {"tasks": [task_row_json(row) for row in rows], "next_cursor": next_cursor}


def history_json(task_id: UUID, events: Sequence[RecordedEvent]) -> dict[str, Any]:
    """A task's events (``GET /v1/tasks/{id}/history``, ``ledger history --json``)."""
    return {"task_id": task_id, "events": [event_json(e) for e in events]}


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
