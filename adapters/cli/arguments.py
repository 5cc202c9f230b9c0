"""Turning command-line words into task requests (JSON args, key=value pairs, delays)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from domain.durations import parse_duration
from domain.errors import ConfigError, InvalidSubmission
from domain.submission import TaskRequest


def parse_args_option(json_text: str | None, pairs: list[str]) -> dict[str, Any]:
    """``--args '{"a": 1}'`` and/or ``-a key=value`` (value read as JSON when it parses)."""
    args: dict[str, Any] = {}
    if json_text:
        try:
            loaded = json.loads(json_text)
        except json.JSONDecodeError as error:
            raise InvalidSubmission(f"--args is not valid JSON: {error}") from None
        if not isinstance(loaded, dict):
            raise InvalidSubmission("--args must be a JSON object")
        args.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidSubmission(f"-a expects key=value, got {pair!r}")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args


def parse_run_at(run_at: str | None, delay: str | None, now: datetime) -> datetime | None:
    if run_at and delay:
        raise InvalidSubmission("give --run-at or --delay, not both")
    if delay:
        try:
            return now + timedelta(seconds=parse_duration(delay))
        except ConfigError as error:
            raise InvalidSubmission(f"--delay: {error.reason}") from None
    if run_at:
        try:
            moment = datetime.fromisoformat(run_at)
        except ValueError:
            raise InvalidSubmission(f"--run-at is not an ISO 8601 time: {run_at!r}") from None
        if moment.tzinfo is None:
            raise InvalidSubmission("--run-at needs a time zone (e.g. 2026-01-01T09:00:00+00:00)")
        return moment
    return None


def load_graph_file(path: Path) -> list[TaskRequest]:
    """A DAG as JSON: ``{"tasks": [{"ref", "type", "args", "depends_on"}, ...]}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidSubmission(f"cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise InvalidSubmission(f"{path} is not valid JSON: {error}") from None
    return graph_requests(data)


_GRAPH_TASK_KEYS = {
    *("ref", "type", "args", "depends_on", "queue", "priority", "lane", "tags", "inputs"),
}


def _tags(value: Any, index: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise InvalidSubmission(f"tasks[{index}].tags must be an array of strings")
    return tuple(value)


def graph_requests(data: Any) -> list[TaskRequest]:
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise InvalidSubmission('a graph is an object with a "tasks" array')
    requests = []
    for index, item in enumerate(data["tasks"]):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise InvalidSubmission(f'tasks[{index}] must be an object with a "type"')
        unknown = set(item) - _GRAPH_TASK_KEYS
        if unknown:
            raise InvalidSubmission(f"tasks[{index}]: unknown field {sorted(unknown)[0]!r}")
        depends_on = item.get("depends_on", [])
        if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
            raise InvalidSubmission(f"tasks[{index}].depends_on must be an array of strings")
        requests.append(
            TaskRequest(
                type_name=item["type"],
                args=item.get("args", {}),
                ref=item.get("ref"),
                depends_on=tuple(depends_on),
                queue=item.get("queue"),
                priority=item.get("priority"),
                lane=item.get("lane"),
                tags=_tags(item.get("tags", []), index),
                inputs=item.get("inputs"),
            )
        )
    return requests
