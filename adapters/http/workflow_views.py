"""The workflow part of a task's JSON (``GET /v1/tasks/{id}``): its latest progress, its
parent and children, the signals it waits for or got, and the inputs it takes."""

from __future__ import annotations

from typing import Any

from execution_ledger.domain.task import Task


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
