"""Schedule routes: cron schedules with their next fire times; pause and resume (admin)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.http import policy
from adapters.http.auth import requester_of
from adapters.http.context import ServerContext, context_of
from adapters.http.views import json_response
from adapters.ledger import utc_now
from domain.errors import UnknownSchedule


def _schedule_json(ctx: ServerContext, name: str) -> dict[str, Any]:
    schedule = ctx.registry.schedules[name]
    paused = ctx.runtime.store.load_schedule_control(name).paused
    return {
        "name": name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "task_type": schedule.task_type,
        "args": dict(schedule.args),
        "catch_up": schedule.catch_up.value,
        "paused": paused,
        "next_fire": None if paused else schedule.next_fire(utc_now()).isoformat(),
    }


def _all_schedules(ctx: ServerContext) -> list[dict[str, Any]]:
    return [_schedule_json(ctx, name) for name in sorted(ctx.registry.schedules)]


async def list_schedules(request: web.Request) -> web.Response:
    ctx = context_of(request)
    return json_response({"schedules": await ctx.run(_all_schedules, ctx)})


async def _change_schedule(request: web.Request, paused: bool) -> web.Response:
    ctx = context_of(request)
    name = request.match_info["name"]
    requester = requester_of(request)
    policy.check_queue_control(ctx.registry, requester, what="schedules")
    if name not in ctx.registry.schedules:
        raise UnknownSchedule(f"unknown schedule {name!r}")
    change = ctx.runtime.ledger.pause_schedule if paused else ctx.runtime.ledger.resume_schedule
    await ctx.run(change, name, requester.principal)
    return json_response(await ctx.run(_schedule_json, ctx, name))


async def pause_schedule(request: web.Request) -> web.Response:
    return await _change_schedule(request, paused=True)


async def resume_schedule(request: web.Request) -> web.Response:
    return await _change_schedule(request, paused=False)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/schedules", list_schedules, name="schedules.list"),
        web.post("/v1/schedules/{name}/pause", pause_schedule, name="schedules.pause"),
        web.post("/v1/schedules/{name}/resume", resume_schedule, name="schedules.resume"),
    ]
