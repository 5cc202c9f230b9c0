"""The HTTP server: ``build_app`` wires routes, middlewares and shared state over a runtime;
``serve_http`` listens until told to stop.

Middlewares, outermost first: the connection guard's request tracking (``connections.py``);
request metrics; errors to JSON (and denials to the audit trail); the request's deadline for
a database connection (``deadline.py``); the ``Host`` check and CORS
preflights (``browser_guard.py``); authentication; the ``Origin`` check; rate limit per
principal. ``serve_http`` listens through ``connections.GuardedSite``: a cap on open
connections, a deadline for each request's headers, aiohttp's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from execution_ledger.adapters.http import (
    routes_access,
    routes_activity,
    routes_audit,
    routes_bulk,
    routes_dataset,
    routes_events,
    routes_registry,
    routes_registry_versions,
    routes_schedules,
    routes_service,
    routes_simulations,
    routes_tasks,
)
from execution_ledger.adapters.http.auth import (
    action_of,
    auth_middleware,
    principal_of,
    record_denial,
)
from execution_ledger.adapters.http.browser_guard import (
    BrowserRules,
    cors_headers,
    host_guard,
    origin_guard,
)
from execution_ledger.adapters.http.connections import (
    CONNECTIONS,
    ConnectionGuards,
    GuardedSite,
    track_requests,
)
from execution_ledger.adapters.http.console import routes as console_routes
from execution_ledger.adapters.http.context import CONTEXT, ServerContext, context_of
from execution_ledger.adapters.http.deadline import deadline_middleware
from execution_ledger.adapters.http.errors import error_middleware
from execution_ledger.adapters.http.limits import HttpLimits
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import ConfigError

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = context_of(request).metrics
    started = time.perf_counter()
    route = request.match_info.route
    label = route.resource.canonical if route.resource is not None else "unmatched"
    response = await handler(request)
    metrics.requests.labels(label, request.method, str(response.status)).inc()
    if isinstance(response, web.Response):  # streams last as long as the client stays
        metrics.latency.labels(label, request.method).observe(time.perf_counter() - started)
    return response


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = context_of(request)
    ctx.rate_limiter.check(principal_of(request))
    return await handler(request)


async def _record_denial(request: web.Request, status: int, reason: str) -> None:
    ctx = context_of(request)
    action = action_of(request)
    ctx.metrics.denied.labels(action, str(status)).inc()
    try:
        await ctx.run(record_denial, ctx.runtime, principal_of(request), action, reason)
    except Exception:
        log.exception("could not record a denied request (%s, %s)", action, reason)


async def _background(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CONTEXT]
    watcher = asyncio.create_task(ctx.watcher.run(), name="http-log-watcher")
    yield
    ctx.closing.set()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    ctx.executor.shutdown(wait=False, cancel_futures=True)


async def _closing(app: web.Application) -> None:
    """Waits and streams end now rather than at their deadline."""
    ctx = app[CONTEXT]
    ctx.closing.set()
    ctx.watcher.wake_all()


def build_app(
    runtime: Runtime, limits: HttpLimits | None = None, *, listen_host: str | None = None
) -> web.Application:
    """The application (``listen_host``: the address ``serve_http`` listens on, a name the
    ``Host`` header may use)."""
    limits = limits or HttpLimits(**runtime.settings.config.http_limits)
    ctx = ServerContext(runtime, limits)
    rules = BrowserRules.of(limits, listen_host)
    app = web.Application(
        client_max_size=limits.max_body_bytes,
        middlewares=[
            track_requests,
            metrics_middleware,
            error_middleware(_record_denial),
            deadline_middleware(limits.request_deadline_seconds),
            host_guard(rules),
            auth_middleware(runtime.registry),
            origin_guard(rules),
            rate_limit_middleware,
        ],
    )
    app[CONTEXT] = ctx
    app[CONNECTIONS] = ConnectionGuards(limits)
    app.on_response_prepare.append(cors_headers(rules))
    for module in (
        routes_tasks,
        routes_registry,
        routes_registry_versions,
        routes_schedules,
        routes_audit,
        routes_bulk,
        routes_events,
        routes_service,
        routes_dataset,
        routes_access,
        routes_activity,
        routes_simulations,
        console_routes,
    ):
        app.router.add_routes(module.routes())
    routes_service.install_openapi(app, runtime.registry)
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_closing)
    return app


def is_loopback(host: str) -> bool:
    """True if every address ``host`` names is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_listen_address(runtime: Runtime, host: str) -> None:
    if not runtime.registry.principals and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host!r}: no principals are configured, so every request "
            "would act as admin; listen on 127.0.0.1 (or ::1), or add [[principals]] with "
            "token_sha256 to the configuration"
        )


async def serve_http(
    runtime: Runtime,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    limits: HttpLimits | None = None,
    on_listening: Callable[[list[tuple[str, int]]], None] | None = None,
) -> None:
    """Serve the API on ``host:port`` until ``stop`` is set (``port`` 0: any free port;
    ``on_listening`` receives the bound addresses)."""
    check_listen_address(runtime, host)
    app = build_app(runtime, limits, listen_host=host)
    # handler_cancellation: a client that hangs up ends its wait or stream at once.
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=5.0,
        handler_cancellation=True,
        keepalive_timeout=app[CONTEXT].limits.keepalive_timeout_seconds,
    )
    await runner.setup()
    try:
        site = GuardedSite(runner, host, port, app[CONNECTIONS])
        await site.start()
        addresses = [(a[0], a[1]) for a in runner.addresses]
        log.info("HTTP API listening on %s", ", ".join(f"{h}:{p}" for h, p in addresses))
        if on_listening is not None:
            on_listening(addresses)
        await stop.wait()
    finally:
        await runner.cleanup()
