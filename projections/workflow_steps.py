"""The workflow steps of the learning dataset: one row per workflow event of the log, so
that what a run-time tree did (children spawned and how each ended, signals awaited and
delivered, progress reported) is replayed from the log alone, like the attempt rows.

Pure: ``workflow_step(event, position)`` is the row of one domain event, or None for every
other event (so a log without workflow events has no step rows, and the attempt rows of
``attempt_fold.py`` are untouched by all of this). Columns (``STEP_COLUMNS``, in order):

- ``position``, ``task_id``, ``at`` (the event's timestamp), ``step``: ``enqueued_child``
  (a task spawned at run time), ``awaiting_signals`` (a task enqueued or unblocked to wait
  for signals, or a success held for them), ``signalled``, ``children_spawned``,
  ``child_ended``, ``progress``;
- ``parent_id``, ``depth``: of an ``enqueued_child``;
- ``signal``, ``by``: of a ``signalled`` (``signal`` also lists the awaited names of an
  ``awaiting_signals``, comma-separated);
- ``children``, ``wait``, ``on_child_failure``: of a ``children_spawned``;
- ``child_id``, ``child_state``: of a ``child_ended``;
- ``progress``, ``message``: of a ``progress`` (a ``TaskHeartbeat`` that carries one);
- ``state``: the task's state after the event.
"""

from __future__ import annotations

from typing import Any

from execution_ledger.projections.base import Event, is_task_event, kind

STEP_COLUMNS: tuple[str, ...] = (
    "position",
    "task_id",
    "at",
    "step",
    "state",
    "parent_id",
    "depth",
    "signal",
    "by",
    "children",
    "wait",
    "on_child_failure",
    "child_id",
    "child_state",
    "progress",
    "message",
)


def workflow_step(event: Event, position: int) -> dict[str, Any] | None:
    """The step row of ``event`` (every column present, unset ones None), or None."""
    if not is_task_event(event):
        return None
    e: Any = event
    values = _values(kind(event), e)
    if values is None:
        return None
    row: dict[str, Any] = dict.fromkeys(STEP_COLUMNS)
    row.update(position=position, task_id=str(e.originator_id), at=e.timestamp.isoformat())
    row.update(values)
    return row


def _values(name: str, e: Any) -> dict[str, Any] | None:
    if name == "TaskEnqueued":
        if e.parent_id is not None:
            return {"step": "enqueued_child", "state": e.initial_state,
                    "parent_id": str(e.parent_id), "depth": e.depth}  # fmt: skip
        if e.initial_state == "waiting":
            return {"step": "awaiting_signals", "state": "waiting", "signal": _names(e.signals)}
        return None
    if name == "TaskUnblocked" and e.state == "waiting":
        return {"step": "awaiting_signals", "state": "waiting"}
    if name == "TaskAwaitingSignals":  # a success held until signals come
        return {"step": "awaiting_signals", "state": "waiting", "signal": _names(e.signals)}
    if name == "TaskSignalled":
        return {"step": "signalled", "state": e.state, "signal": e.name, "by": e.by}
    if name == "TaskChildrenSpawned":
        return {"step": "children_spawned", "state": e.state, "children": len(e.children),
                "wait": e.wait, "on_child_failure": e.on_child_failure}  # fmt: skip
    if name == "TaskChildEnded":
        return {"step": "child_ended", "state": e.state, "child_id": str(e.child_id),
                "child_state": e.child_state}  # fmt: skip
    if name == "TaskHeartbeat" and (e.progress is not None or e.message is not None):
        return {"step": "progress", "state": "running", "progress": e.progress,
                "message": e.message}  # fmt: skip
    return None


def _names(signals: list[str] | None) -> str | None:
    return ",".join(signals) if signals else None
