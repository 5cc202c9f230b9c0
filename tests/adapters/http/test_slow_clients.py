"""Slow and greedy clients over real sockets: headers sent one byte at a time are cut off at
the header timeout while the server keeps answering others; a body sent too slowly is 408;
an idle kept-alive connection is closed; connections past the cap are refused, and the
server answers again once they are gone. Every check waits for the server's own act (a
closed connection, a response), never for a span of time."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import pytest

from execution_ledger.adapters.config_file import ConfigFileError, parse_config
from execution_ledger.adapters.http.limits import HttpLimits
from execution_ledger.adapters.runtime import Runtime
from tests.adapters.http.live_server import LiveServer

SLOW_CLIENTS = 200
# Guards against a hang when the server never acts; never reached when it does.
HANG_GUARD_SECONDS = 60.0


@dataclass
class SlowClient:
    """One connection that sends a never-ending header, a byte at a time."""

    port: int
    started: asyncio.Event
    closed_by_server: bool = False
    answer: bytes = b""
    sent: int = 0

    async def run(self, prefix: bytes = b"") -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(prefix)
            header = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Slow: " % self.port
            await self._trickle(reader, writer, header + b"a" * 100_000)
        finally:
            writer.close()

    async def _trickle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
    ) -> None:
        for byte in data:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
                self.sent += 1
                self.started.set()
                self.answer = await asyncio.wait_for(reader.read(4096), 0.05)
            except TimeoutError:
                continue  # nothing from the server yet: send the next byte
            except (ConnectionError, OSError):
                self.closed_by_server = True
                return
            self.closed_by_server = True  # EOF (b"") or an unexpected answer: stop here
            return


async def _slowloris(port: int, healthz_url: str) -> tuple[list[SlowClient], int, int]:
    clients = [SlowClient(port, asyncio.Event()) for _ in range(SLOW_CLIENTS)]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.started.wait() for c in clients)), 30)
    async with httpx.AsyncClient(timeout=30) as client:
        health = await client.get(healthz_url)
    still_open = sum(1 for c in clients if not c.closed_by_server)
    done, pending = await asyncio.wait(tasks, timeout=HANG_GUARD_SECONDS)
    for task in pending:
        task.cancel()
    for task in done:
        task.result()
    return clients, health.status_code, still_open


def test_headers_sent_a_byte_at_a_time_are_cut_off_while_healthz_answers(
    runtime: Runtime,
) -> None:
    limits = HttpLimits(header_read_timeout_seconds=5.0)
    with LiveServer(runtime, limits=limits) as live:
        clients, health, still_open = asyncio.run(_slowloris(live.port, f"{live.url}/healthz"))
        with live.client() as client:
            assert client.get("/healthz").status_code == 200
    assert health == 200
    assert still_open == SLOW_CLIENTS  # /healthz answered while every slow client was open
    never_closed = [c for c in clients if not c.closed_by_server]
    assert never_closed == [], f"{len(never_closed)} slow clients were never cut off"
    # Each was cut off mid-header, with no answer, however long it kept sending.
    assert all(c.answer == b"" and c.sent < 100_000 for c in clients)


async def _second_request_trickled(port: int) -> SlowClient:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
    slow = SlowClient(port, asyncio.Event())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 200"), status
        await _read_response_rest(reader)
        header = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Slow: " % port
        await asyncio.wait_for(
            slow._trickle(reader, writer, header + b"a" * 100_000), HANG_GUARD_SECONDS
        )
    finally:
        writer.close()
    return slow


async def _read_response_rest(reader: asyncio.StreamReader) -> None:
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)


def test_the_next_request_on_a_kept_alive_connection_has_a_header_deadline_too(
    runtime: Runtime,
) -> None:
    limits = HttpLimits(header_read_timeout_seconds=2.0, keepalive_timeout_seconds=300.0)
    with LiveServer(runtime, limits=limits) as live:
        slow = asyncio.run(_second_request_trickled(live.port))
    assert slow.closed_by_server and slow.answer == b""


async def _idle_after_one_request(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
        await reader.readline()
        await _read_response_rest(reader)
        return await asyncio.wait_for(reader.read(), HANG_GUARD_SECONDS)  # EOF: closed
    finally:
        writer.close()


def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout(
    runtime: Runtime,
) -> None:
    limits = HttpLimits(keepalive_timeout_seconds=1.0)
    with LiveServer(runtime, limits=limits) as live:
        assert asyncio.run(_idle_after_one_request(live.port)) == b""


async def _slow_body(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"type": "ec' % port
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), HANG_GUARD_SECONDS)
        await _read_response_rest(reader)
        return status
    finally:
        writer.close()


def test_a_body_that_does_not_arrive_in_time_is_408_and_stores_nothing(
    runtime: Runtime,
) -> None:
    limits = HttpLimits(body_read_timeout_seconds=1.0)
    with LiveServer(runtime, limits=limits) as live:
        status = asyncio.run(_slow_body(live.port))
        with live.client() as client:
            assert client.get("/v1/events").json()["events"] == []
    assert status.startswith(b"HTTP/1.1 408")


CAP = 20


async def _over_the_cap(port: int, url: str) -> tuple[bytes, int]:
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CAP)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    refused = await asyncio.wait_for(reader.read(), HANG_GUARD_SECONDS)  # answer, then EOF
    writer.close()
    for _, held_writer in held:
        held_writer.close()
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(200):  # the server sees the held connections close
            try:
                status = (await client.get(url)).status_code
            except httpx.TransportError:
                status = 0
            if status == 200:
                return refused, status
            await asyncio.sleep(0.05)
    return refused, status


def test_connections_past_the_cap_are_refused_and_the_server_recovers(runtime: Runtime) -> None:
    limits = HttpLimits(max_connections=CAP, header_read_timeout_seconds=300.0)
    with LiveServer(runtime, limits=limits) as live:
        refused, recovered = asyncio.run(_over_the_cap(live.port, f"{live.url}/healthz"))
    assert refused.startswith(b"HTTP/1.1 503 ")
    assert b"too_many_connections" in refused
    assert recovered == 200


def test_the_connection_limits_are_read_from_the_http_table() -> None:
    text = """
[http]
header_read_timeout = "5s"
body_read_timeout = "1m"
keepalive_timeout = 20
max_connections = 50
"""
    limits = HttpLimits(**parse_config(text, "ledger.toml").http_limits)
    assert limits.header_read_timeout_seconds == 5.0
    assert limits.body_read_timeout_seconds == 60.0
    assert limits.keepalive_timeout_seconds == 20.0
    assert limits.max_connections == 50


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("header_read_timeout = 0", "a duration must be positive"),
        ('body_read_timeout = "soon"', "cannot read duration"),
        ("keepalive_timeout = true", "expected a duration"),
        ("max_connections = 0", "expected a whole number of at least 1"),
        ("max_connections = 1.5", "expected a whole number"),
    ],
)
def test_a_bad_connection_limit_is_refused_with_file_and_line(line: str, reason: str) -> None:
    text = f"[queues.default]\n\n[http]\nmax_waiting = 10\n{line}\n"
    with pytest.raises(ConfigFileError) as refused:
        parse_config(text, "ledger.toml")
    assert refused.value.line == 5
    assert reason in refused.value.reason
