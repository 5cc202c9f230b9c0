"""Who is asking: bearer tokens to principals and roles, and the record of refused requests.

Tokens are compared by their SHA-256 (the registry holds only hashes). With no principals
configured every request is the local admin; ``serve_http`` then listens on loopback only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from execution_ledger.adapters.http.errors import unauthenticated
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.submission import Requester

LOCAL_ADMIN = Requester(principal="local", role="admin")
ANONYMOUS = "anonymous"
# Routes anyone may call (no token): liveness and the API description.
# The console's page and files are public too (it asks for a token, then sends it), and
# /v1/access, which checks a token itself when one is sent.
PUBLIC_ROUTES = frozenset(
    {"service.health", "service.openapi", "console.page", "console.file", "access.get"}
)
REQUESTER = web.RequestKey("requester", Requester)

audit_log = logging.getLogger("ledger.audit")


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def authenticate(registry: Registry, authorization: str | None) -> Requester:
    """The requester named by an ``Authorization: Bearer TOKEN`` header (401 otherwise)."""
    if not registry.principals:
        return LOCAL_ADMIN
    if not authorization:
        raise unauthenticated("this API needs a bearer token (Authorization: Bearer TOKEN)")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthenticated("the Authorization header must read 'Bearer TOKEN'")
    digest = token_sha256(token)
    found = None
    for principal in registry.principals:  # no early exit: same work for any token
        if hmac.compare_digest(digest, principal.token_sha256):
            found = principal
    if found is None:
        raise unauthenticated("unknown bearer token")
    return Requester(principal=found.name, role=found.role)


def requester_of(request: web.Request) -> Requester:
    return request[REQUESTER]


def principal_of(request: web.Request) -> str:
    requester = request.get(REQUESTER)
    return requester.principal if requester is not None else ANONYMOUS


def action_of(request: web.Request) -> str:
    """The route's name (``tasks.cancel``), or method and path for an unknown route."""
    route = request.match_info.route
    name = route.name if route is not None else None
    return name or f"{request.method} {request.path}"


def auth_middleware(registry: Registry) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if action_of(request) in PUBLIC_ROUTES:
            request[REQUESTER] = Requester(principal=ANONYMOUS, role="")
        else:
            request[REQUESTER] = authenticate(registry, request.headers.get("Authorization"))
        return await handler(request)

    return auth


def record_denial(runtime: Runtime, principal: str, action: str, reason: str) -> None:
    """Record a refused request (401/403) in the audit trail (``Ledger.record_denial``:
    an ``AccessDenied`` event, within a budget per principal) and the audit log.
    Blocking: call it from a thread."""
    runtime.ledger.record_denial(principal, action, reason)
    audit_log.warning(
        "access denied: principal=%s action=%s reason=%s schema=%s",
        principal,
        action,
        reason,
        runtime.settings.schema,
        extra={"principal": principal, "action": action, "reason": reason},
    )
