"""The service a node runs, put together in one place: the HTTP API, the worker node and,
with NATS, the bridge (egress and ingress) and the NATS server it may start, run together
until told to stop. ``ledger serve`` and ``ledger demo`` start it; the ways in themselves
(``http/``, ``nats/``, ``cli/``) never import one another, so this composition is here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from execution_ledger.adapters.runtime import Runtime

if TYPE_CHECKING:
    from execution_ledger.adapters.nats.connection import NatsConnection
    from execution_ledger.adapters.nats.server import NatsServer
    from execution_ledger.adapters.node import WorkerNode

OnListening = Callable[[list[tuple[str, int]]], None]


def check_listen_address(runtime: Runtime, host: str) -> None:
    """Refuse, before anything starts, an address the HTTP API would not serve on."""
    from execution_ledger.adapters.http.app import check_listen_address as check

    check(runtime, host)


@dataclass
class Nats:
    """The NATS servers the bridge connects to, and the one this process started, if any."""

    connection: NatsConnection
    started: NatsServer | None

    def stop(self) -> None:
        if self.started is not None:
            self.started.stop()  # only a server this process started


def find_or_start_nats(runtime: Runtime) -> Nats:
    """The configured NATS servers, else a ``nats-server`` started on loopback."""
    from execution_ledger.adapters.nats.connection import NatsConnection
    from execution_ledger.adapters.nats.server import find_or_start_nats as find_or_start

    server = find_or_start(runtime.settings.nats_url)
    connection = runtime.settings.nats or NatsConnection.parse(server.url)
    return Nats(connection, server)


async def serve_api(
    runtime: Runtime, host: str, port: int, stop: asyncio.Event, on_listening: OnListening
) -> None:
    """The HTTP API alone, until ``stop`` is set."""
    from execution_ledger.adapters.http.app import serve_http

    await serve_http(runtime, host, port, stop, on_listening=on_listening)


async def serve(
    runtime: Runtime,
    node: WorkerNode,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    nats: NatsConnection | None = None,
    on_listening: OnListening,
) -> None:
    """The HTTP API, the worker node and (with ``nats``) the bridge, until ``stop`` is set
    or one of them fails (then the others stop and the failure is raised)."""
    jobs = [
        asyncio.create_task(serve_api(runtime, host, port, stop, on_listening)),
        asyncio.create_task(node.run(stop)),
    ]
    if nats is not None:
        from execution_ledger.adapters.nats.bridge import NatsBridge

        jobs.append(asyncio.create_task(NatsBridge(runtime, nats).run(stop)))
    await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*jobs)  # re-raises a failure
