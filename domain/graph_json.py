"""Task requests from JSON objects: a submitted graph (``{"tasks": [...]}``, from
``ledger enqueue --graph`` and ``POST /v1/graphs``) and the children a running task spawns.
Pure parsing, one rule for every way in: each object names a ``type`` and may carry
``ref``, ``args``, ``depends_on`` (refs or ids), ``queue``, ``priority``, ``lane``,
``tags`` and ``inputs``; anything else is refused, naming its place (``tasks[2]``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from execution_ledger.domain.errors import InvalidSubmission
from execution_ledger.domain.submission import TaskRequest

TASK_KEYS = frozenset(
    {"ref", "type", "args", "depends_on", "queue", "priority", "lane", "tags", "inputs"}
)


def graph_requests(data: Any) -> list[TaskRequest]:
    """The requests of a graph: an object with a ``tasks`` array."""
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise InvalidSubmission('a graph is an object with a "tasks" array')
    return task_requests(data["tasks"], "tasks")


def task_requests(items: Iterable[Any], label: str) -> list[TaskRequest]:
    """One request per JSON object of ``items``; ``label`` names the array in errors."""
    return [_request(item, f"{label}[{index}]") for index, item in enumerate(items)]


def _request(item: Any, where: str) -> TaskRequest:
    if not isinstance(item, dict) or not isinstance(item.get("type"), str):
        raise InvalidSubmission(f'{where} must be an object with a "type"')
    unknown = set(item) - TASK_KEYS
    if unknown:
        raise InvalidSubmission(f"{where}: unknown field {sorted(unknown)[0]!r}")
    return TaskRequest(
        type_name=item["type"],
        args=item.get("args", {}),
        ref=item.get("ref"),
        depends_on=_strings(item.get("depends_on", []), f"{where}.depends_on"),
        queue=item.get("queue"),
        priority=item.get("priority"),
        lane=item.get("lane"),
        tags=_strings(item.get("tags", []), f"{where}.tags"),
        inputs=item.get("inputs"),
    )


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidSubmission(f"{where} must be an array of strings")
    return tuple(value)
