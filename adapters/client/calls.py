"""Each operation of the HTTP API as a ``Call``: the request to send and how to read its
answer. Written once here; ``LedgerClient`` (sync) and ``AsyncLedgerClient`` send them.

Parsing never guesses: a 2xx answer is read into the typed view of ``models.py``; any other
answer is raised as the exception of its error code (``errors.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from execution_ledger.adapters.client.models import (
    EventPage,
    EventView,
    GraphView,
    TaskPage,
    TaskView,
)

T = TypeVar("T")
WAIT_MARGIN = 10.0  # seconds the client waits beyond a ``?wait`` for the answer


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[int, Any], T]  # (status, parsed JSON body) of a 2xx answer -> result
    params: Mapping[str, str] | None = None
    body: Any = None
    timeout: float | None = None  # None: the client's own


def _clean(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options the caller set (None means: the service's default)."""
    return {key: value for key, value in options.items() if value is not None}


def _task(_: int, data: Any) -> TaskView:
    return TaskView.from_json(data)


def _mapping(_: int, data: Any) -> dict[str, Any]:
    return dict(data)


def _params(**options: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in _clean(options).items():
        out[key] = value.isoformat() if isinstance(value, datetime) else str(value)
    return out


def task_body(type_name: str, args: Mapping[str, Any] | None, options: Mapping[str, Any]) -> Any:
    """The JSON body of one task: ``type``, ``args`` and the options given (``run_at`` a
    ``datetime`` or text, ``depends_on`` ids, ``timeouts`` a mapping of durations...)."""
    body = {"type": type_name, "args": dict(args or {}), **_clean(options)}
    if isinstance(body.get("run_at"), datetime):
        body["run_at"] = body["run_at"].isoformat()
    if "depends_on" in body:
        body["depends_on"] = [str(d) for d in body["depends_on"]]
    if "tags" in body:
        body["tags"] = list(body["tags"])
    return body


def enqueue(
    type_name: str,
    args: Mapping[str, Any] | None = None,
    wait: float | None = None,
    **options: Any,
) -> Call[TaskView]:
    """``POST /v1/tasks``: the new task (``created``), or the holder of its idempotency or
    singleton key (``created`` False); with ``wait``, the task once ended or when ``wait``
    seconds have passed."""

    def read(status: int, data: Any) -> TaskView:
        return TaskView.from_json(data, created=status == 201 or (wait is not None))

    return Call(
        "POST",
        "/v1/tasks",
        read,
        params=_params(wait=wait),
        body=task_body(type_name, args, options),
        timeout=None if wait is None else wait + WAIT_MARGIN,
    )


def enqueue_graph(tasks: Sequence[Mapping[str, Any]]) -> Call[GraphView]:
    """``POST /v1/graphs``: tasks naming each other by ``ref`` in ``depends_on``."""
    return Call("POST", "/v1/graphs", lambda _, d: GraphView.from_json(d), body={"tasks": tasks})


def get_task(task_id: UUID | str) -> Call[TaskView]:
    return Call("GET", f"/v1/tasks/{task_id}", _task)


def list_tasks(
    state: str | None = None,
    type_name: str | None = None,
    queue: str | None = None,
    lane: str | None = None,
    tag: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    text: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[TaskPage]:
    """``GET /v1/tasks``: one page, newest first, from the task view."""
    params = _params(
        state=state, type=type_name, queue=queue, lane=lane, tag=tag, since=since,
        until=until, text=text, limit=limit, cursor=cursor,
    )  # fmt: skip
    return Call("GET", "/v1/tasks", lambda _, d: TaskPage.from_json(d), params=params)


def history(task_id: UUID | str) -> Call[list[EventView]]:
    def read(_: int, data: Any) -> list[EventView]:
        return [EventView.from_json(e) for e in data["events"]]

    return Call("GET", f"/v1/tasks/{task_id}/history", read)


def cancel(task_id: UUID | str, reason: str = "") -> Call[TaskView]:
    body = {"reason": reason} if reason else {}
    return Call("POST", f"/v1/tasks/{task_id}/cancel", _task, body=body)


def retry(task_id: UUID | str) -> Call[TaskView]:
    return Call("POST", f"/v1/tasks/{task_id}/retry", _task, body={})


def signal(task_id: UUID | str, name: str, data: Any = None) -> Call[TaskView]:
    body = _clean({"name": name, "data": data})
    return Call("POST", f"/v1/tasks/{task_id}/signal", _task, body=body)


def events(after: int = 0, limit: int | None = None) -> Call[EventPage]:
    """``GET /v1/events``: the log after a position (``next_after`` continues)."""
    params = _params(after=after, limit=limit)
    return Call("GET", "/v1/events", lambda _, d: EventPage.from_json(d), params=params)


def queues() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/v1/queues", lambda _, d: list(d["queues"]))


def pause_queue(name: str) -> Call[dict[str, Any]]:
    return Call("POST", f"/v1/queues/{name}/pause", _mapping, body={})


def resume_queue(name: str) -> Call[dict[str, Any]]:
    return Call("POST", f"/v1/queues/{name}/resume", _mapping, body={})


def health() -> Call[dict[str, Any]]:
    return Call("GET", "/healthz", _mapping)
