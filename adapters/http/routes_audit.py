"""Audit routes: verify the hash chain over the event log (admin)."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from adapters.http import policy
from adapters.http.auth import requester_of
from adapters.http.context import context_of
from adapters.http.views import json_response
from adapters.postgres.audit import verify_chain


async def verify(request: web.Request) -> web.Response:
    """200 whatever the verdict: ``ok`` says whether the log is intact."""
    ctx = context_of(request)
    policy.check_queue_control(ctx.registry, requester_of(request), what="the audit trail")
    runtime = ctx.runtime
    report = await ctx.run(verify_chain, runtime.store, runtime.runners["audit_chain"])
    return json_response(dataclasses.asdict(report))


def routes() -> list[web.RouteDef]:
    return [web.get("/v1/audit/verify", verify, name="audit.verify")]
