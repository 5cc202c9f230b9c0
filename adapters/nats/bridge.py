"""The NATS bridge of a ledger node: one NATS connection running the egress (events to
JetStream) and the ingress (subjects to tasks) until told to stop.

The connection goes to one of the configured servers (``NatsConnection``: one URL or a
cluster's list, credentials, TLS) and reconnects on its own (unlimited attempts), to any
server of the cluster; a first connection that fails, or one that closes for good, is
opened again after a pause. On a cluster the streams keep three copies
(``stream_replicas``), so the egress and the publish routes' consumer go on when the node
leading a stream dies. Every node may run a bridge: the ingress subscribes in a queue group
and consumes the publish routes' stream through one durable consumer (each message handled
by one node), and the egress publishes on one node at a time (advisory lock). After a
reconnect the publish routes resume from the consumer's durable position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client

from execution_ledger.adapters.nats.connection import NatsConnection, redact, stream_replicas
from execution_ledger.adapters.nats.egress import EGRESS_NAME, EventEgress
from execution_ledger.adapters.nats.ingress import NatsIngress
from execution_ledger.adapters.runtime import Runtime

log = logging.getLogger(__name__)
PERMISSIONS_VIOLATION = "permissions violation"  # how the server words a refused subject


class NatsBridge:
    def __init__(
        self,
        runtime: Runtime,
        connection: NatsConnection | str,
        *,
        egress: bool = True,
        ingress: bool = True,
        role: str = "admin",
        allow_adhoc: bool = False,
        name: str = "execution-ledger",
    ) -> None:
        self.runtime = runtime
        if isinstance(connection, str):  # one URL or a comma-separated list
            connection = NatsConnection.parse(connection)
        self.connection = connection
        self.url = connection.shown  # for messages: passwords and tokens hidden
        self.with_egress = egress
        self.with_ingress = ingress
        self.role = role
        self.allow_adhoc = allow_adhoc
        self.name = name
        self.settings = runtime.registry.nats
        self.egress: EventEgress | None = None
        self.ingress: NatsIngress | None = None
        self.connected = asyncio.Event()  # set while a connection is open (and subscribed)
        self._closed = asyncio.Event()
        self._closing = False

    async def connect(self) -> Client:
        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        async def on_disconnected() -> None:
            if not closed.is_set() and not self._closing:
                log.warning("NATS connection to %s lost; reconnecting", self.url)

        async def on_reconnected() -> None:
            log.info("NATS connection to %s back", self.url)

        async def on_error(error: Exception) -> None:
            if PERMISSIONS_VIOLATION in str(error).lower():
                # A subject this user may not use: without this line the ledger would just
                # wait (a route never delivered, a JetStream call timing out, retried).
                log.error(
                    "NATS at %s refused the ledger's user: %s; it needs the subjects listed in "
                    "docs/deployment.md (A NATS cluster: what the ledger's NATS user needs)",
                    self.url,
                    str(error).removeprefix("nats: "),
                )
                return
            log.debug("NATS client error: %s", error)

        nc = await nats.connect(
            **self.connection.connect_options(),
            name=self.name,
            connect_timeout=2,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            closed_cb=on_closed,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            error_cb=on_error,
        )
        self._closed = closed
        return nc

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, run egress and ingress until ``stop``; connect again if the connection
        closes for good or a job fails. On stop: unsubscribe, answer the requests in flight
        with the state their tasks reached, close."""
        delay = 0.5
        while not stop.is_set():
            # The client keeps trying a server that refuses; stop must still end the wait.
            connecting = asyncio.create_task(self.connect())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([connecting, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not connecting.done():
                connecting.cancel()
                await asyncio.gather(connecting, stopping, return_exceptions=True)
                return
            try:
                nc = connecting.result()
            except (TimeoutError, nats.errors.Error, OSError) as error:
                reason = redact(str(error))
                log.warning("cannot connect to NATS at %s (%s); retrying", self.url, reason)
                if await _wait(stop, delay):
                    return
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            try:
                await self._run_connected(nc, stop)
            finally:
                self.connected.clear()
                self._closing = True
                with contextlib.suppress(Exception):
                    await nc.close()
                self._closing = False
            await _wait(stop, 1.0)  # closed for good, or a job failed: a pause, then again

    async def _run_connected(self, nc: Client, stop: asyncio.Event) -> None:
        inner_stop = asyncio.Event()
        jobs: list[asyncio.Task[Any]] = []
        watchers = [
            asyncio.create_task(stop.wait()),
            asyncio.create_task(self._closed.wait()),
        ]
        self.egress = self.ingress = None
        try:
            if self.with_egress:
                self.egress = EventEgress(
                    self.runtime.log_follower(EGRESS_NAME),
                    nc.jetstream(),
                    self.settings,
                    replicas=stream_replicas(nc, self.settings.stream_replicas),
                )
                jobs.append(asyncio.create_task(self.egress.run(inner_stop), name="nats-egress"))
            if self.with_ingress:
                self.ingress = NatsIngress(
                    self.runtime, nc, self.settings, role=self.role, allow_adhoc=self.allow_adhoc
                )
                await self.ingress.start()
            self.connected.set()
            log.info("NATS bridge connected to %s", self.url)
            await asyncio.wait([*watchers, *jobs], return_when=asyncio.FIRST_COMPLETED)
            if self._closed.is_set() and not stop.is_set():
                log.warning("NATS connection to %s closed; opening a new one", self.url)
        finally:
            inner_stop.set()
            if self.ingress is not None:
                await self.ingress.close()
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            results = await asyncio.gather(*jobs, return_exceptions=True)
            for job, result in zip(jobs, results, strict=True):
                if isinstance(result, Exception):
                    log.error("NATS bridge: %s failed", job.get_name(), exc_info=result)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
