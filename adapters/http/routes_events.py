"""The global event log: a page of events after a position, and a live stream (server-sent
events, each with its log position as ``id``, resumable with ``Last-Event-ID``)."""

from __future__ import annotations

import contextlib
import logging
import time

from aiohttp import web

from execution_ledger.adapters.event_log import (
    MAX_EVENTS_PAGE,
    MAX_POSITION,
    EventFilter,
)
from execution_ledger.adapters.http import bodies
from execution_ledger.adapters.http.context import ServerContext, context_of
from execution_ledger.adapters.http.errors import DATABASE_ERRORS
from execution_ledger.adapters.http.views import json_response
from execution_ledger.adapters.views import dumps, event_json
from execution_ledger.domain.errors import InvalidQuery

log = logging.getLogger(__name__)
STREAM_BATCH = 500


def _filter(request: web.Request) -> EventFilter:
    types = bodies.query_text(request, "type")
    return EventFilter(
        types=tuple(types.split(",")) if types is not None else (),
        task_id=bodies.query_uuid(request, "task"),
        principal=bodies.query_text(request, "principal"),
        since=bodies.query_time(request, "since"),
        until=bodies.query_time(request, "until"),
    )


async def list_events(request: web.Request) -> web.Response:
    ctx = context_of(request)
    after = bodies.query_int(request, "after", 0, 0, MAX_POSITION)
    limit = bodies.query_int(request, "limit", 100, 1, MAX_EVENTS_PAGE)
    page = await ctx.run(ctx.reads.events, after, limit, _filter(request))
    return json_response(
        {
            "events": [event_json(e) for e in page.events],
            "next_after": page.next_after,
            "head": page.head,
        }
    )


def _stream_start(request: web.Request) -> int | None:
    """Where to resume: ``Last-Event-ID`` (sent by a reconnecting client), else ``?after``,
    else None (the head: new events only)."""
    last_id = request.headers.get("Last-Event-ID")
    if last_id is not None and last_id.strip():
        try:
            position = int(last_id.strip())
        except ValueError:
            raise InvalidQuery(f"Last-Event-ID must be a log position, got {last_id!r}") from None
        if not 0 <= position <= MAX_POSITION:
            raise InvalidQuery("Last-Event-ID must be a log position")
        return position
    if "after" in request.query:
        return bodies.query_int(request, "after", 0, 0, MAX_POSITION)
    return None


async def stream_events(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    where = _filter(request)
    start = _stream_start(request)
    with ctx.waiting.hold():
        after = start if start is not None else await ctx.run(ctx.reads.head_position)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        try:
            await response.write(b"retry: 1000\n\n")
            await _follow(ctx, response, after, where)
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away
        except DATABASE_ERRORS as error:
            log.warning("event stream ended: database unavailable (%s)", error)
            await _write_quietly(response, b"event: error\ndata: database unavailable\n\n")
    return response


async def _follow(
    ctx: ServerContext, response: web.StreamResponse, after: int, where: EventFilter
) -> None:
    keepalive = ctx.limits.stream_keepalive_seconds
    last_write = time.monotonic()
    while not ctx.closing.is_set():
        changed = ctx.watcher.changed()
        page = await ctx.run(ctx.reads.events, after, STREAM_BATCH, where)
        for recorded in page.events:
            view = event_json(recorded)
            frame = f"id: {recorded.position}\nevent: {view['type']}\ndata: {dumps(view)}\n\n"
            await response.write(frame.encode("utf-8"))
            last_write = time.monotonic()
        after = page.next_after
        if after < page.head:
            continue  # more to read already
        idle = time.monotonic() - last_write
        if idle >= keepalive:
            await response.write(b": keepalive\n\n")
            last_write = time.monotonic()
            continue
        await ctx.watcher.wait(changed, keepalive - idle)


async def _write_quietly(response: web.StreamResponse, data: bytes) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write(data)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/events", list_events, name="events.list"),
        web.get("/v1/events/stream", stream_events, name="events.stream"),
    ]
