"""Schedule routes: the file's and the run-time cron schedules with their next fire times;
create, update and delete run-time ones; pause, resume and backfill any (admin, or a role
with ``may_schedule``; ``adapters/schedules.py`` decides)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from execution_ledger.adapters.http import bodies
from execution_ledger.adapters.http.auth import requester_of
from execution_ledger.adapters.http.context import ServerContext, context_of
from execution_ledger.adapters.http.schedule_schemas import (
    BACKFILL_REQUEST,
    SCHEDULE_DEFINITION,
    SCHEDULE_UPDATE,
)
from execution_ledger.adapters.http.views import json_response
from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.schedules import Backfill, Schedules, ScheduleView
from execution_ledger.domain.errors import InvalidSchedule


def schedule_json(view: ScheduleView) -> dict[str, Any]:
    schedule = view.schedule
    return {
        "name": schedule.name,
        "source": view.source,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "task_type": schedule.task_type,
        "args": dict(schedule.args),
        "catch_up": schedule.catch_up.value,
        "max_catch_up": schedule.max_catch_up,
        "overlap": schedule.overlap.value,
        "paused": view.paused,
        "next_fire": None if view.paused else schedule.next_fire(utc_now()).isoformat(),
        "skipped_ticks": view.runs.skipped_ticks,
        "last_skipped_tick": _time(view.runs.last_skipped_tick),
    }


def backfill_json(backfill: Backfill) -> dict[str, Any]:
    return {
        "name": backfill.name,
        "since": backfill.since.isoformat(),
        "until": backfill.until.isoformat(),
        "ticks": backfill.ticks,
        "enqueued": backfill.enqueued,
        "existing": backfill.existing,
        "dry_run": backfill.dry_run,
        "task_ids": [str(task_id) for task_id in backfill.task_ids],
    }


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _schedules(ctx: ServerContext) -> Schedules:
    return Schedules(ctx.runtime.ledger)


async def list_schedules(request: web.Request) -> web.Response:
    ctx = context_of(request)
    views = await ctx.run(lambda: _schedules(ctx).all())
    return json_response({"schedules": [schedule_json(v) for v in views]})


async def get_schedule(request: web.Request) -> web.Response:
    ctx = context_of(request)
    view = await ctx.run(_schedules(ctx).get, request.match_info["name"])
    return json_response(schedule_json(view))


async def create_schedule(request: web.Request) -> web.Response:
    ctx = context_of(request)
    body = bodies.validated(await bodies.read_json(request), SCHEDULE_DEFINITION, "the body")
    spec = {key: value for key, value in body.items() if key != "name"}
    view = await ctx.run(_schedules(ctx).define, body["name"], spec, requester_of(request))
    return json_response(schedule_json(view), status=201)


async def update_schedule(request: web.Request) -> web.Response:
    ctx = context_of(request)
    body = bodies.validated(await bodies.read_json(request), SCHEDULE_UPDATE, "the body")
    name = request.match_info["name"]
    view, changes = await ctx.run(_schedules(ctx).update, name, body, requester_of(request))
    return json_response({**schedule_json(view), "changes": changes})


async def delete_schedule(request: web.Request) -> web.Response:
    ctx = context_of(request)
    name = request.match_info["name"]
    await ctx.run(_schedules(ctx).delete, name, requester_of(request))
    return json_response({"name": name, "deleted": True})


async def pause_schedule(request: web.Request) -> web.Response:
    ctx = context_of(request)
    view = await ctx.run(_schedules(ctx).pause, request.match_info["name"], requester_of(request))
    return json_response(schedule_json(view))


async def resume_schedule(request: web.Request) -> web.Response:
    ctx = context_of(request)
    view = await ctx.run(_schedules(ctx).resume, request.match_info["name"], requester_of(request))
    return json_response(schedule_json(view))


async def backfill_schedule(request: web.Request) -> web.Response:
    ctx = context_of(request)
    body = bodies.validated(await bodies.read_json(request), BACKFILL_REQUEST, "the body")
    backfill = await ctx.run(
        _schedules(ctx).backfill,
        request.match_info["name"],
        _parse_time(body["since"], "since"),
        _parse_time(body["until"], "until"),
        requester_of(request),
        body.get("dry_run", False),
    )
    return json_response(backfill_json(backfill))


def _parse_time(text: str, key: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidSchedule(f"{key}: not an ISO 8601 time: {text[:60]!r}") from None


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/schedules", list_schedules, name="schedules.list"),
        web.post("/v1/schedules", create_schedule, name="schedules.create"),
        web.get("/v1/schedules/{name}", get_schedule, name="schedules.get"),
        web.patch("/v1/schedules/{name}", update_schedule, name="schedules.update"),
        web.delete("/v1/schedules/{name}", delete_schedule, name="schedules.delete"),
        web.post("/v1/schedules/{name}/pause", pause_schedule, name="schedules.pause"),
        web.post("/v1/schedules/{name}/resume", resume_schedule, name="schedules.resume"),
        web.post("/v1/schedules/{name}/backfill", backfill_schedule, name="schedules.backfill"),
    ]
