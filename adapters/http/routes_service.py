"""Service routes: liveness (``/healthz``), Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from execution_ledger.adapters.http.context import context_of
from execution_ledger.adapters.http.metrics import CONTENT_TYPE
from execution_ledger.adapters.http.openapi import openapi_document
from execution_ledger.adapters.http.views import json_response
from execution_ledger.domain.registry import Registry

OPENAPI = web.AppKey("openapi", dict)


async def health(request: web.Request) -> web.Response:
    """200 when the database answers (503 otherwise, from the error middleware); ``reads``:
    where lag-tolerant reads go (``target``) and, with a replica, its lag and the bound."""
    ctx = context_of(request)
    positions = await ctx.run(ctx.reads.projection_positions)
    head = await ctx.run(ctx.reads.head_position)
    reads = await ctx.run(ctx.reads.read_status)
    return json_response(
        {"status": "ok", "head": head, "projections": positions, "reads": reads.as_json()}
    )


async def metrics(request: web.Request) -> web.Response:
    ctx = context_of(request)
    body = await ctx.run(ctx.metrics.render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


def routes() -> list[web.RouteDef]:
    return [
        web.get("/healthz", health, name="service.health"),
        web.get("/metrics", metrics, name="service.metrics"),
        web.get("/openapi.json", openapi, name="service.openapi"),
    ]


def install_openapi(app: web.Application, registry: Registry) -> None:
    app[OPENAPI] = openapi_document(registry)
