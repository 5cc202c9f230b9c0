"""Bulk action routes: ``POST /v1/bulk`` (a dry run's count and sample, or the action
recorded and started: 202 with its id) and ``GET /v1/bulk/{id}`` (its progress, from the
log). The action runs in a thread of its own, batch by batch (``adapters/bulk_actions.py``),
so no request holds a transaction or a connection for its length; a server that stops
ends it between two batches (``stopped``, what was changed stays changed).

A role that may not act on some of the matches (``policy.check_bulk``) is refused with 403
before anything is written, and the refusal is recorded as any other."""

from __future__ import annotations

import logging
import threading
from typing import Any
from uuid import UUID

from aiohttp import web

from execution_ledger.adapters.bulk_actions import BulkPreview, BulkRequest, Permit, plan_bulk
from execution_ledger.adapters.http import bodies, policy
from execution_ledger.adapters.http.auth import requester_of
from execution_ledger.adapters.http.bulk_schemas import BULK_REQUEST, FILTER_FIELDS
from execution_ledger.adapters.http.context import ServerContext, context_of
from execution_ledger.adapters.http.views import json_response
from execution_ledger.adapters.task_filters import filter_json, task_filter
from execution_ledger.domain.bulk import BulkAction, BulkChange, MatchedKind
from execution_ledger.domain.errors import InvalidQuery
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.submission import Requester

log = logging.getLogger(__name__)


async def start_bulk(request: web.Request) -> web.Response:
    """200 with the count and a sample (``dry_run``), else 202 with the recorded action."""
    ctx = context_of(request)
    body = bodies.validated(await bodies.read_json(request), BULK_REQUEST, "the body")
    bulk = bulk_request(ctx.registry, body)
    requester = requester_of(request)
    permit = permit_of(ctx.registry, requester)
    if body.get("dry_run"):
        preview = await ctx.run(ctx.runtime.ledger.bulk_preview, bulk, permit)
        return json_response(dry_run_json(bulk, preview))
    action = await ctx.run(ctx.runtime.ledger.bulk_request, bulk, requester, permit)
    run_in_background(ctx, action.id, permit)
    return json_response(
        bulk_json(action), status=202, headers={"Location": f"/v1/bulk/{action.id}"}
    )


async def get_bulk(request: web.Request) -> web.Response:
    ctx = context_of(request)
    bulk_id = _path_bulk_id(request)
    return json_response(bulk_json(await ctx.run(ctx.runtime.ledger.bulk_action, bulk_id)))


def bulk_request(registry: Registry, body: dict[str, Any]) -> BulkRequest:
    """The request a checked body asks for (``InvalidQuery``, a 400, naming what is wrong)."""
    given = body["filter"]
    unknown = sorted(set(given) - set(FILTER_FIELDS))
    if unknown:
        raise InvalidQuery(f"unknown filter {unknown[0]!r} (valid: {', '.join(FILTER_FIELDS)})")
    where = task_filter(
        registry,
        state=given.get("state"),
        type_name=given.get("type"),
        queue=given.get("queue"),
        lane=given.get("lane"),
        tag=given.get("tag"),
        since=given.get("since"),
        until=given.get("until"),
        text=given.get("text"),
    )
    return plan_bulk(
        registry,
        body["action"],
        where,
        priority=body.get("priority"),
        queue=body.get("queue"),
        reason=body.get("reason", ""),
    )


def permit_of(registry: Registry, requester: Requester) -> Permit:
    """The role check of one requester for every kind of task an action meets."""

    def permit(change: BulkChange, kind: MatchedKind) -> None:
        policy.check_bulk(registry, requester, change.kind.value, kind)

    return permit


def run_in_background(ctx: ServerContext, bulk_id: UUID, permit: Permit) -> None:
    """Carry the action out in a thread of its own (with no request deadline)."""

    def run() -> None:
        try:
            ctx.runtime.ledger.bulk_run(bulk_id, permit, should_stop=ctx.closing.is_set)
        except Exception:  # recorded as BulkActionStopped when the database allowed it
            log.exception("bulk action %s stopped", bulk_id)

    threading.Thread(target=run, name=f"bulk-{bulk_id}", daemon=True).start()


def dry_run_json(bulk: BulkRequest, preview: BulkPreview) -> dict[str, Any]:
    return {
        "dry_run": True,
        "action": bulk.change.kind.value,
        "filter": filter_json(bulk.where),
        "matched": preview.matched,
        "sample": preview.sample,
    }


def bulk_json(action: BulkAction) -> dict[str, Any]:
    return {
        "id": action.id,
        "action": action.action,
        "filter": action.task_filter,
        "priority": action.priority,
        "queue": action.queue,
        "reason": action.reason,
        "principal": action.principal,
        "role": action.role,
        "state": action.state.value,
        "matched": action.matched,
        "changed": action.changed,
        "skipped": action.skipped,
        "stop_reason": action.stop_reason,
        "requested_at": action.created_on,
        "updated_at": action.modified_on,
    }


def _path_bulk_id(request: web.Request) -> UUID:
    text = request.match_info["bulk_id"]
    try:
        return UUID(text)
    except ValueError:
        raise InvalidQuery(f"a bulk action id is a UUID, got {text!r}") from None


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/bulk", start_bulk, name="bulk.start"),
        web.get("/v1/bulk/{bulk_id}", get_bulk, name="bulk.get"),
    ]
