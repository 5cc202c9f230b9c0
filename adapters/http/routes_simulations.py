"""``POST /v1/simulations`` (admin only): replay a window of the log through the registry of
a configuration file's text, on a simulated clock (``adapters/simulation.py``), and answer
the report beside what happened, with its digest. Nothing is written to the log.

The body: ``{"toml": "...", "since", "until", "until_position", "workers", "concurrency",
"seed"}`` (``openapi_simulation_paths.SIMULATION_REQUEST``); the times are ISO 8601 with a
zone or a duration before now (``24h``), as ``ledger simulate`` takes them. A file that is
not a valid registry is 422 naming its line; numbers and times that mean nothing are 400.

Its deadline: a simulation reads the window a page at a time, however long that takes.
Each of its reads of the log gets the request's whole deadline to have a connection (as a
GET's reads do), so a database that does not answer is still a quick 503 while a long
window is not cut short. One simulation runs at a time in a server (it is CPU work that
shares the process with every other request); another asked for meanwhile is 429
``simulation_busy`` with ``Retry-After``. Windows too long to wait for over HTTP are for
``ledger simulate``.
"""

from __future__ import annotations

import asyncio
import weakref
from datetime import UTC, datetime
from typing import Any, cast

from aiohttp import web

from execution_ledger.adapters.config_file import parse_config
from execution_ledger.adapters.deadlines import call_deadline, current_deadline
from execution_ledger.adapters.http import bodies, policy
from execution_ledger.adapters.http.auth import requester_of
from execution_ledger.adapters.http.context import ServerContext, context_of
from execution_ledger.adapters.http.errors import HttpError
from execution_ledger.adapters.http.openapi_simulation_paths import SIMULATION_REQUEST
from execution_ledger.adapters.http.views import json_response
from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.simulation import (
    SimulationRequest,
    check_settings,
    simulate,
    text_sha256,
)
from execution_ledger.domain.errors import Forbidden, InvalidQuery
from execution_ledger.domain.moments import parse_moment
from execution_ledger.domain.submission import Requester

SOURCE = "POST /v1/simulations"
RETRY_AFTER = "5"  # seconds
_running: weakref.WeakSet[ServerContext] = weakref.WeakSet()  # servers running one now


async def run_simulation(request: web.Request) -> web.Response:
    ctx = context_of(request)
    _check_admin(ctx, requester_of(request))
    body = bodies.validated(await bodies.read_json(request), SIMULATION_REQUEST, "the body")
    options = _options(body)  # 400 before the file is read
    config = await ctx.run(parse_config, body["toml"], "request body")  # 422: FILE:LINE
    sim_request = SimulationRequest(
        registry=config.registry,
        registry_text_sha256=text_sha256(body["toml"]),
        registry_source=SOURCE,
        **options,
    )
    report = await _one_at_a_time(ctx, sim_request)
    return json_response({**report.data, "digest": report.digest})


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """The window and the simulated pool, checked (400 for what means nothing)."""
    now = datetime.now(UTC)
    until_position = body.get("until_position")
    if until_position is not None and until_position < 0:
        raise InvalidQuery(f"until_position must be a log position from 0, not {until_position}")
    return {
        "since": parse_moment(body.get("since"), "since", now),
        "until": parse_moment(body.get("until"), "until", now),
        "until_position": until_position,
        "settings": check_settings(
            body.get("workers", 1), body.get("concurrency", 10), body.get("seed", 0)
        ),
    }


async def _one_at_a_time(ctx: ServerContext, sim_request: SimulationRequest) -> Any:
    """The simulation, in the server's thread pool; 429 while another runs. A client that
    hangs up does not free the slot before the thread has ended."""
    if ctx in _running:
        raise HttpError(
            429,
            "simulation_busy",
            "a simulation is running on this server; try again when it has ended",
            {"Retry-After": RETRY_AFTER},
        )
    _running.add(ctx)
    store = cast(EventStore, _EachReadItsDeadline(ctx.runtime.store))
    with call_deadline(ctx.limits.request_deadline_seconds, per_call=True):
        running = asyncio.ensure_future(ctx.run(simulate, store, sim_request, ctx.registry))
    running.add_done_callback(lambda done: _ended(ctx, done))
    return await asyncio.shield(running)


def _ended(ctx: ServerContext, done: asyncio.Future[Any]) -> None:
    """The slot is free again; a failure nobody awaits any more (the client hung up) is
    taken here rather than logged as never retrieved."""
    _running.discard(ctx)
    if not done.cancelled():
        done.exception()


class _EachReadItsDeadline:
    """The event store as the simulation reads it: each read of the log starts the request's
    deadline again (``deadlines.CallDeadline.start_call``), like a GET stream's reads."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def read(self, *args: Any, **kwargs: Any) -> Any:
        _restart_deadline()
        return self._store.read(*args, **kwargs)

    def head_position(self) -> int:
        _restart_deadline()
        return self._store.head_position()

    def transaction(self) -> Any:
        _restart_deadline()
        return self._store.transaction()


def _restart_deadline() -> None:
    deadline = current_deadline()
    if deadline is not None:
        deadline.start_call()


def _check_admin(ctx: ServerContext, requester: Requester) -> None:
    role = policy.role_of(ctx.registry, requester)
    if role.name != "admin":
        raise Forbidden(f"role {role.name!r} may not run simulations (admin only)")


def routes() -> list[web.RouteDef]:
    return [web.post("/v1/simulations", run_simulation, name="simulations.run")]
