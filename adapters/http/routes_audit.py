"""Audit routes: verify the hash chain over the event log (admin), the last verification
this server ran, and the audit log (every event with principal and actor, filtered)."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from execution_ledger.adapters.event_log import MAX_EVENTS_PAGE, MAX_POSITION
from execution_ledger.adapters.http import bodies, policy
from execution_ledger.adapters.http.auth import requester_of
from execution_ledger.adapters.http.context import context_of
from execution_ledger.adapters.http.views import json_response
from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.ledger_reads import AuditFilter

# The last verification run by this process, per schema (kept in memory: a restart forgets it).
_last_verification: dict[str, dict[str, Any]] = {}


async def verify(request: web.Request) -> web.Response:
    """200 whatever the verdict: ``ok`` says whether the log is intact."""
    ctx = context_of(request)
    requester = requester_of(request)
    policy.check_queue_control(ctx.registry, requester, what="the audit trail")
    runtime = ctx.runtime
    report = await ctx.run(runtime.verify_audit_chain)
    view = dataclasses.asdict(report)
    _last_verification[runtime.settings.schema] = {
        **view,
        "verified_at": utc_now(),
        "by": requester.principal,
    }
    return json_response(view)


async def last_verification(request: web.Request) -> web.Response:
    """The last verification this server ran (``null`` if none since it started)."""
    ctx = context_of(request)
    last = _last_verification.get(ctx.runtime.settings.schema)
    return json_response({"last_verification": last})


async def audit_log(request: web.Request) -> web.Response:
    """Events with the principal on whose authority and the actor who did it, oldest first
    after ``?after``; filters as ``ledger audit log``."""
    ctx = context_of(request)
    types = bodies.query_text(request, "type")
    where = AuditFilter(
        task_id=bodies.query_uuid(request, "task"),
        principal=bodies.query_text(request, "principal") or None,
        actor=bodies.query_text(request, "actor") or None,
        types=tuple(t for t in types.split(",") if t) if types else (),
        since=bodies.query_time(request, "since"),
        until=bodies.query_time(request, "until"),
    )
    after = bodies.query_int(request, "after", 0, 0, MAX_POSITION)
    limit = bodies.query_int(request, "limit", 100, 1, MAX_EVENTS_PAGE)
    page = await ctx.run(ctx.reads.audit_events, where, after, limit)
    return json_response(
        {
            "entries": [dataclasses.asdict(entry) for entry in page.entries],
            "next_after": page.next_after,
            "head": page.head,
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/audit/verify", verify, name="audit.verify"),
        web.get("/v1/audit/last-verification", last_verification, name="audit.last"),
        web.get("/v1/audit/log", audit_log, name="audit.log"),
    ]
