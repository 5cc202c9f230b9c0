"""Reading requests: JSON bodies checked against their schemas, query and path parameters.

Bodies are refused before they reach the domain when they are not labelled
``Content-Type: application/json`` (415: a browser page may send ``text/plain`` to any
origin without asking first), arrive too slowly (408, ``[http] body_read_timeout``), are
not JSON (400), do not match the operation's schema (422), or hold strings PostgreSQL cannot
store (NUL, lone surrogates: 422), so that nothing stored can later break a read model.
The schema check and a task body's reading are ``adapters/submission_json.py``'s (the NATS
ingress reads its bodies the same way).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from execution_ledger.adapters.http.context import context_of
from execution_ledger.adapters.http.errors import HttpError, bad_json, unsupported_media_type
from execution_ledger.adapters.refusals import BadJson, parse_body
from execution_ledger.adapters.submission_json import task_request, validated
from execution_ledger.adapters.task_filters import parse_time
from execution_ledger.domain.errors import (
    InvalidQuery,
    TaskNotFound,
)
from execution_ledger.domain.graph_json import graph_requests
from execution_ledger.domain.submission import TaskRequest

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
        return parse_body(raw)
    except BadJson as error:
        raise bad_json(str(error)) from None


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


def graph_task_requests(body: Mapping[str, Any]) -> list[TaskRequest]:
    """The tasks of a body already checked against ``GRAPH_SUBMISSION`` (refs required)."""
    return graph_requests(body)


__all__ = [
    "check_json_content_type",
    "graph_task_requests",
    "path_task_id",
    "query_int",
    "query_seconds",
    "query_text",
    "query_time",
    "query_uuid",
    "read_json",
    "task_request",
    "validated",
]
