"""``GET /v1/activity?minutes=60``: tasks ended per minute over the last minutes, by final
state (succeeded, failed, other: cancelled or skipped), for throughput and failure charts."""

from __future__ import annotations

from aiohttp import web

from execution_ledger.adapters.http import bodies
from execution_ledger.adapters.http.context import context_of
from execution_ledger.adapters.http.views import json_response
from execution_ledger.adapters.ledger_reads import MAX_ACTIVITY_MINUTES


async def activity(request: web.Request) -> web.Response:
    ctx = context_of(request)
    minutes = bodies.query_int(request, "minutes", 60, 1, MAX_ACTIVITY_MINUTES)
    rows = await ctx.run(ctx.reads.finished_per_minute, minutes)
    return json_response(
        {
            "minutes": [
                {
                    "minute": row["minute"],
                    "succeeded": row["succeeded"],
                    "failed": row["failed"],
                    "other": row["other"],
                }
                for row in rows
            ]
        }
    )


def routes() -> list[web.RouteDef]:
    return [web.get("/v1/activity", activity, name="activity.get")]
