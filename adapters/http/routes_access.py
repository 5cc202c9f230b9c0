"""``GET /v1/access``: who the caller is and what its role may do, so a client (the web
console) offers only the actions the server would accept. The server still checks every
request itself (``policy.py``); this is a description, not a permission."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from execution_ledger.adapters.http import policy
from execution_ledger.adapters.http.auth import ANONYMOUS, authenticate
from execution_ledger.adapters.http.context import context_of
from execution_ledger.adapters.http.views import json_response
from execution_ledger.domain.errors import Forbidden
from execution_ledger.domain.submission import Requester


async def access(request: web.Request) -> web.Response:
    """A public route: without a token (and with principals configured) it answers
    ``signed_in: false`` rather than 401, so opening the console records no denial; a
    token it does not know is refused (401, recorded) as on every other route."""
    ctx = context_of(request)
    header = request.headers.get("Authorization")
    if header is None and ctx.registry.principals:
        requester = Requester(principal=ANONYMOUS, role="")
    else:
        requester = authenticate(ctx.registry, header)
    view: dict[str, Any] = {
        "principal": requester.principal,
        "role": requester.role,
        "signed_in": requester.principal != ANONYMOUS,
        "principals_configured": bool(ctx.registry.principals),
        "may_cancel": False,
        "task_types": [],
        "adapters": [],
        "adhoc": False,
        "may_control": False,
    }
    try:
        role = policy.role_of(ctx.registry, requester)
    except Forbidden:
        return json_response(view)
    view.update(
        may_cancel=role.may_cancel,
        task_types=list(role.task_types),
        adapters=list(role.adapters),
        adhoc=role.adhoc,
        may_control=role.name in policy.QUEUE_CONTROL_ROLES,
    )
    return json_response(view)


def routes() -> list[web.RouteDef]:
    return [web.get("/v1/access", access, name="access.get")]
