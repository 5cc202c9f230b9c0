"""A task submission as JSON, read the same way by every way in that takes one (the HTTP
API's ``POST /v1/tasks`` body, the NATS request subject's message): ``validated`` checks a
value against its JSON Schema (``request_schemas.py``; 422 naming the first place it does
not match) and refuses strings PostgreSQL cannot store (NUL, lone surrogates). The check
itself is ``jsonschema_rs`` (0.3 µs for a task body, against 21 µs in ``jsonschema``, a few
per cent of ``ledger serve``'s time per request); a body it refuses is checked again by
``jsonschema``, whose ``best_match`` names the place;
``task_request`` turns a checked body into a ``TaskRequest``; ``submitted_task`` is both.
A graph's body is ``domain/graph_json.py``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jsonschema
import jsonschema_rs

from execution_ledger.adapters.request_schemas import MAX_TIMEOUT_SECONDS, TASK_SUBMISSION, Schema
from execution_ledger.domain.coalescing import debounce_option
from execution_ledger.domain.durations import parse_duration
from execution_ledger.domain.errors import ConfigError, InvalidSubmission
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.timeouts import TimeoutOverrides

_validators: dict[int, jsonschema.Draft202012Validator] = {}
_checkers: dict[int, Any] = {}  # id(schema) -> its jsonschema_rs validator


def submitted_task(body: Any) -> TaskRequest:
    """One task from a submission body (checked against ``TASK_SUBMISSION`` first)."""
    return task_request(validated(body, TASK_SUBMISSION, "the task"))


def validated(value: Any, schema: Schema, what: str) -> Any:
    """``value`` if it matches ``schema``; else 422 naming the first place it does not."""
    if not _matches(value, schema):
        _refuse(value, schema, what)
    _refuse_unstorable_strings(value, what)
    return value


def _matches(value: Any, schema: Schema) -> bool:
    """Whether ``value`` matches ``schema``, by ``jsonschema_rs``. Formats are not asserted,
    as ``jsonschema`` does not assert them without a format checker; a value it cannot take
    (none that JSON gives) is left to ``jsonschema``."""
    checker = _checkers.get(id(schema))
    if checker is None:
        checker = _checkers[id(schema)] = jsonschema_rs.validator_for(
            schema, validate_formats=False
        )
    try:
        return bool(checker.is_valid(value))
    except (ValueError, TypeError, OverflowError):
        return False


def _refuse(value: Any, schema: Schema, what: str) -> None:
    """422 naming the first place ``value`` does not match ``schema`` (``jsonschema``'s
    ``best_match``); nothing if it matches after all."""
    validator = _validators.get(id(schema))
    if validator is None:
        validator = _validators[id(schema)] = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InvalidSubmission(f"{what} at {where}: {error.message}")


def _refuse_unstorable_strings(value: Any, what: str) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_text(item, what)
        elif isinstance(item, Mapping):
            for key, child in item.items():
                _check_text(key, what)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def _check_text(text: str, what: str) -> None:
    if "\x00" in text:
        raise InvalidSubmission(f"{what}: strings must not contain the NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidSubmission(f"{what}: strings must be valid Unicode") from None


def task_request(body: Mapping[str, Any]) -> TaskRequest:
    """One task from a body already checked against ``TASK_SUBMISSION``."""
    return TaskRequest(
        type_name=body["type"],
        args=body.get("args", {}),
        depends_on=tuple(body.get("depends_on", ())),
        run_at=_time(body.get("run_at")),
        queue=body.get("queue"),
        priority=body.get("priority"),
        lane=body.get("lane"),
        idempotency_key=body.get("idempotency_key"),
        idempotency_period=_seconds(body.get("idempotency_period"), "idempotency_period"),
        tags=tuple(body.get("tags", ())),
        timeouts=_timeouts(body.get("timeouts")),
        max_attempts=body.get("max_attempts"),
        adapter=body.get("adapter"),
        adapter_settings=body.get("adapter_settings"),
        inputs=body.get("inputs"),
        singleton=body.get("singleton"),
        debounce=None if body.get("debounce") is None else debounce_option(body["debounce"]),
    )


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidSubmission(f"run_at is not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise InvalidSubmission("run_at needs a time zone (e.g. 2026-01-01T09:00:00+00:00)")
    return moment


def _seconds(value: Any, field: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value, (field,))
    except ConfigError as error:
        raise InvalidSubmission(f"{field}: {error.reason}") from None


def _timeouts(data: Mapping[str, Any] | None) -> TimeoutOverrides:
    try:
        overrides = TimeoutOverrides.from_mapping(dict(data) if data else None, ("timeouts",))
    except ConfigError as error:
        where = ".".join(error.where) or "timeouts"
        raise InvalidSubmission(f"{where}: {error.reason}") from None
    for kind, seconds in vars(overrides).items():
        if seconds is not None and seconds > MAX_TIMEOUT_SECONDS:
            raise InvalidSubmission(f"timeouts.{kind}: at most {MAX_TIMEOUT_SECONDS:g} seconds")
    return overrides
