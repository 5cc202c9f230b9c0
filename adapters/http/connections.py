"""Slow and idle clients, and how many connections may be open at once (``[http]``).

aiohttp gives a client all the time it wants to send a request's headers as long as bytes
keep coming (a "slowloris" holds a connection for ever with one byte a second), and accepts
any number of connections. So every accepted connection gets a ``GuardedConnection`` in
front of aiohttp's own protocol:

- past ``max_connections`` open connections a new one is answered 503 and closed at once;
- a request's whole header block must arrive within ``header_read_timeout``, counted from
  the accept for the first request and from its first byte for the next ones on a kept-alive
  connection, however slowly bytes keep coming; else the connection is closed.

``track_requests`` (the outermost middleware) tells the guard when a request's headers were
read (its handler starts) and when it ended. aiohttp closes an idle kept-alive connection
itself (``keepalive_timeout``, given by ``serve_http``); a request body has its own deadline
where it is read (``bodies.read_json``, 408).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from execution_ledger.adapters.http.limits import HttpLimits

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_FULL_BODY = json.dumps(
    {"error": {"code": "too_many_connections", "message": "too many open connections; retry"}}
).encode()
FULL_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_FULL_BODY), _FULL_BODY)
)


class ConnectionGuards:
    """The open connections of one server, and its limits on them."""

    def __init__(self, limits: HttpLimits) -> None:
        self.header_timeout = limits.header_read_timeout_seconds
        self.max_connections = limits.max_connections
        self._open: dict[asyncio.BaseTransport, GuardedConnection] = {}
        self.refused = 0  # connections answered 503 (the cap)
        self.cut = 0  # connections closed for sending their headers too slowly

    @property
    def open_count(self) -> int:
        return len(self._open)

    def protocol_factory(
        self, make_inner: Callable[[], asyncio.Protocol]
    ) -> Callable[[], asyncio.Protocol]:
        """What ``loop.create_server`` calls for each accepted connection."""
        return lambda: GuardedConnection(self, make_inner)

    def admit(self, transport: asyncio.BaseTransport, connection: GuardedConnection) -> bool:
        if len(self._open) >= self.max_connections:
            self.refused += 1
            return False
        self._open[transport] = connection
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        self._open.pop(transport, None)

    def find(self, transport: asyncio.BaseTransport | None) -> GuardedConnection | None:
        return self._open.get(transport) if transport is not None else None


class GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the cap and the header deadline."""

    def __init__(self, guards: ConnectionGuards, make_inner: Callable[[], asyncio.Protocol]):
        self._guards = guards
        self._make_inner = make_inner
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._in_request = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self._guards.admit(transport, self):
            transport.write(FULL_RESPONSE)
            transport.close()
            return
        self._inner = self._make_inner()
        self._inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if not self._in_request and self._deadline is None:
            self._arm()  # the first byte of the next request on a kept-alive connection
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._transport is not None:
            self._guards.release(self._transport)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def request_started(self) -> None:
        """The headers are in: the handler runs (the body has its own deadline)."""
        self._in_request = True
        self._disarm()

    def request_ended(self) -> None:
        self._in_request = False

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._guards.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if self._in_request or self._transport is None:
            return
        self._guards.cut += 1
        log.info(
            "closing a connection from %s: no complete request headers within %g s",
            self._transport.get_extra_info("peername"),
            self._guards.header_timeout,
        )
        self._transport.abort()


CONNECTIONS = web.AppKey("connections", ConnectionGuards)


@web.middleware
async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection's guard that a request's headers arrived and when it ended."""
    connection = request.app[CONNECTIONS].find(request.transport)
    if connection is None:  # served without the guard (tests' aiohttp client)
        return await handler(request)
    connection.request_started()
    try:
        return await handler(request)
    finally:
        connection.request_ended()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through ``ConnectionGuards``."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guards: ConnectionGuards):
        super().__init__(runner, backlog=1024)
        self._host = host
        self._port = port
        self._guards = guards

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guards.protocol_factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )
