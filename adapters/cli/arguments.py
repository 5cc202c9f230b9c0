"""Turning command-line words into task requests (JSON args, key=value pairs, delays)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from execution_ledger.domain.durations import parse_duration
from execution_ledger.domain.errors import ConfigError, InvalidSubmission
from execution_ledger.domain.graph_json import graph_requests
from execution_ledger.domain.submission import TaskRequest


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
