"""Registry and operations routes: task types (discovery), queues (pause, resume), workers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from execution_ledger.adapters.http import policy
from execution_ledger.adapters.http.auth import requester_of
from execution_ledger.adapters.http.context import ServerContext, context_of
from execution_ledger.adapters.http.errors import HttpError
from execution_ledger.adapters.http.views import json_response
from execution_ledger.adapters.registry_follower import registry_versions
from execution_ledger.adapters.views import task_type_json
from execution_ledger.domain.errors import Forbidden, UnknownQueue, UnknownTaskType
from execution_ledger.domain.registry import TaskType
from execution_ledger.domain.submission import Requester


def _may_enqueue(ctx: ServerContext, requester: Requester, task_type: TaskType) -> bool:
    try:
        role = policy.role_of(ctx.registry, requester)
    except Forbidden:
        return False
    return role.name in task_type.roles and role.may_enqueue(task_type)


async def list_task_types(request: web.Request) -> web.Response:
    ctx = context_of(request)
    requester = requester_of(request)
    types = [
        task_type_json(ctx.registry, t, _may_enqueue(ctx, requester, t))
        for _, t in sorted(ctx.registry.task_types.items())
    ]
    return json_response({"task_types": types})


async def get_task_type(request: web.Request) -> web.Response:
    """One type with what history says of it: tasks per state (task view), attempts, success
    and timeout rates, run-time percentiles and a suggested start_to_close (learning dataset)."""
    ctx = context_of(request)
    name = request.match_info["name"]
    task_type = ctx.registry.task_type(name)
    if task_type is None:
        raise HttpError(404, UnknownTaskType.code, f"unknown task type {name!r}")
    view = task_type_json(
        ctx.registry, task_type, _may_enqueue(ctx, requester_of(request), task_type)
    )
    view["statistics"] = await ctx.run(
        ctx.reads.task_type_statistics, task_type.name
    )
    return json_response(view)


def _queue_json(ctx: ServerContext, name: str, counts: dict[str, Any]) -> dict[str, Any]:
    config = ctx.registry.queue(name)
    timeouts = {kind: getattr(config.timeouts, kind) for kind in vars(config.timeouts)}
    return {
        "name": name,
        "concurrency": config.concurrency,
        "paused": bool(counts.get("paused", False)),
        "ready": counts.get("ready", 0),
        "scheduled": counts.get("scheduled", 0),
        "running": counts.get("running", 0),
        "timeouts": timeouts,
    }


async def list_queues(request: web.Request) -> web.Response:
    ctx = context_of(request)
    counts = await ctx.run(ctx.reads.queue_counts)
    names = sorted(ctx.registry.queues)
    return json_response({"queues": [_queue_json(ctx, n, counts.get(n, {})) for n in names]})


async def _change_queue(request: web.Request, paused: bool) -> web.Response:
    ctx = context_of(request)
    name = request.match_info["name"]
    requester = requester_of(request)
    policy.check_queue_control(ctx.registry, requester)
    if name not in ctx.registry.queues:
        raise UnknownQueue(f"unknown queue {name!r}")
    change = ctx.runtime.ledger.pause_queue if paused else ctx.runtime.ledger.resume_queue
    await ctx.run(change, name, requester.principal)
    counts = await ctx.run(ctx.reads.queue_counts)
    return json_response(_queue_json(ctx, name, counts.get(name, {})))


async def pause_queue(request: web.Request) -> web.Response:
    return await _change_queue(request, paused=True)


async def resume_queue(request: web.Request) -> web.Response:
    return await _change_queue(request, paused=False)


async def list_workers(request: web.Request) -> web.Response:
    """The worker nodes, each with the registry version it runs and whether that is the
    latest recorded one."""
    ctx = context_of(request)
    workers = await ctx.run(ctx.reads.worker_nodes)
    latest = await ctx.run(registry_versions(ctx.runtime).latest_number)
    for worker in workers:
        worker["registry_current"] = worker["registry_version"] == latest
    return json_response({"workers": workers, "registry_version": latest})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/task-types", list_task_types, name="task_types.list"),
        web.get("/v1/task-types/{name}", get_task_type, name="task_types.get"),
        web.get("/v1/queues", list_queues, name="queues.list"),
        web.post("/v1/queues/{name}/pause", pause_queue, name="queues.pause"),
        web.post("/v1/queues/{name}/resume", resume_queue, name="queues.resume"),
        web.get("/v1/workers", list_workers, name="workers.list"),
    ]
