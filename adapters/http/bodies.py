"""Reading requests: JSON bodies checked against their schemas, query and path parameters.

Bodies are refused before they reach the domain when they are not labelled
``Content-Type: application/json`` (415: a browser page may send ``text/plain`` to any
origin without asking first), arrive too slowly (408, ``[http] body_read_timeout``), are
not JSON (400), do not match the operation's schema (422), or hold strings PostgreSQL cannot
store (NUL, lone surrogates: 422), so that nothing stored can later break a read model.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import jsonschema
from aiohttp import web

from execution_ledger.adapters.http.context import context_of
from execution_ledger.adapters.http.errors import HttpError, bad_json, unsupported_media_type
from execution_ledger.adapters.http.schemas import MAX_TIMEOUT_SECONDS, Schema
from execution_ledger.adapters.task_filters import parse_time
from execution_ledger.domain.coalescing import debounce_option
from execution_ledger.domain.durations import parse_duration
from execution_ledger.domain.errors import (
    ConfigError,
    InvalidQuery,
    InvalidSubmission,
    TaskNotFound,
)
from execution_ledger.domain.graph_json import graph_requests
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.timeouts import TimeoutOverrides

_validators: dict[int, jsonschema.Draft202012Validator] = {}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_REQUIRED = object()


async def read_json(request: web.Request, *, if_empty: Any = _REQUIRED) -> Any:
    """The body as JSON (415 unless labelled JSON, 408 if it comes too slowly, 400 if it is
    not JSON; aiohttp answers 413 past the size cap); ``if_empty`` when there is no body and
    one is optional."""
    if not request.body_exists and if_empty is not _REQUIRED:
        return if_empty
    check_json_content_type(request)
    raw = await _read_body(request)
    if not raw and if_empty is not _REQUIRED:
        return if_empty
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise bad_json("the body is not UTF-8") from None
    except RecursionError:
        raise bad_json("the body is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, NaN/Infinity, over-long integers
        raise bad_json(f"the body is not valid JSON: {error}") from None


def check_json_content_type(request: web.Request) -> None:
    """415 unless the body is labelled ``application/json`` (a UTF-8 charset allowed)."""
    if request.content_type != "application/json":
        given = request.headers.get("Content-Type")
        raise unsupported_media_type(
            "request bodies must be sent with Content-Type: application/json"
            + (f" (got {given[:100]!r})" if given else " (no Content-Type was given)")
        )
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise unsupported_media_type(f"JSON bodies must be UTF-8, not charset={charset[:40]!r}")


async def _read_body(request: web.Request) -> bytes:
    """The whole body, or 408 when it does not arrive within ``body_read_timeout``."""
    if request.content.is_eof():  # all of it arrived with the headers: nothing to wait for
        return await request.read()
    seconds = context_of(request).limits.body_read_timeout_seconds
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        raise HttpError(
            408,
            "body_timeout",
            f"the request body did not arrive within {seconds:g} s ([http] body_read_timeout)",
            {"Connection": "close"},
        ) from None


def validated(value: Any, schema: Schema, what: str) -> Any:
    """``value`` if it matches ``schema``; else 422 naming the first place it does not."""
    validator = _validators.get(id(schema))
    if validator is None:
        validator = _validators[id(schema)] = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InvalidSubmission(f"{what} at {where}: {error.message}")
    _refuse_unstorable_strings(value, what)
    return value


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


# -- bodies of submissions ------------------------------------------------------------


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


def graph_task_requests(body: Mapping[str, Any]) -> list[TaskRequest]:
    """The tasks of a body already checked against ``GRAPH_SUBMISSION`` (refs required)."""
    return graph_requests(body)


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


# -- query and path parameters --------------------------------------------------------


def query_text(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is not None and "\x00" in value:
        raise InvalidQuery(f"{name} must not contain the NUL character")
    return value


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = query_text(request, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidQuery(f"{name} must be an integer, got {text!r}") from None
    if not low <= value <= high:
        raise InvalidQuery(f"{name} must be between {low} and {high}")
    return value


def query_seconds(request: web.Request, name: str, high: float) -> float | None:
    """A number of seconds from 0 to ``high``."""
    text = query_text(request, name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidQuery(f"{name} must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= high:
        raise InvalidQuery(f"{name} must be a number of seconds from 0 to {high:g}")
    return value


def query_time(request: web.Request, name: str) -> datetime | None:
    """An ISO 8601 time with a zone, e.g. ``2026-11-25T09:00:00+00:00``."""
    return parse_time(query_text(request, name), name)


def query_uuid(request: web.Request, name: str) -> UUID | None:
    text = query_text(request, name)
    if text is None:
        return None
    try:
        return UUID(text)
    except ValueError:
        raise InvalidQuery(f"{name} must be a task id (a UUID), got {text!r}") from None


def path_task_id(request: web.Request) -> UUID:
    text = request.match_info["task_id"]
    try:
        return UUID(text)
    except ValueError:
        raise TaskNotFound(f"no task {text!r}") from None
