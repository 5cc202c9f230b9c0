"""The bridge a node runs: it waits for a NATS server that is not up yet, and stops at once
when told, connected or not."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from execution_ledger.adapters.nats.bridge import NatsBridge
from execution_ledger.adapters.nats.server import free_port, start_nats_server
from execution_ledger.adapters.runtime import Runtime
from tests.adapters.nats.conftest import connected

pytestmark = pytest.mark.asyncio


async def refused_once(caplog: pytest.LogCaptureFixture, port: int) -> None:
    """Wait (bounded) for the bridge's log line saying a connection to ``port`` was refused
    (the client's error, logged at debug level while it keeps trying)."""
    caplog.set_level(logging.DEBUG, logger="execution_ledger.adapters.nats.bridge")
    needle = f"Connect call failed ('127.0.0.1', {port})"
    for _ in range(3000):
        if any(needle in record.getMessage() for record in caplog.records):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no log line with {needle!r}")


async def test_a_bridge_started_before_its_server_connects_when_the_server_comes_up(
    nats_runtime: Runtime, tmp_path: Path, names: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    stop = asyncio.Event()
    bridge = NatsBridge(nats_runtime, f"nats://127.0.0.1:{port}")
    running = asyncio.create_task(bridge.run(stop))
    await refused_once(caplog, port)
    assert not bridge.connected.is_set()
    server = await asyncio.to_thread(start_nats_server, tmp_path / "store", port=port)
    try:
        await asyncio.wait_for(bridge.connected.wait(), 10)
        async with connected(server.url) as client:
            reply = await client.request(f"{names}.quick", b'{"late": true}', timeout=5)
        stop.set()
        await asyncio.wait_for(running, 10)
    finally:
        stop.set()
        server.stop()
    assert json.loads(reply.data)["state"] == "ready"


async def test_a_bridge_that_never_connected_stops_when_told(
    nats_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    stop = asyncio.Event()
    bridge = NatsBridge(nats_runtime, f"nats://127.0.0.1:{port}")
    running = asyncio.create_task(bridge.run(stop))
    await refused_once(caplog, port)  # it is retrying now, with nothing to connect to
    stop.set()

    await asyncio.wait({running}, timeout=30)  # bounded: a bridge that ignores stop fails
    assert running.done(), "the bridge did not stop when told"
    assert running.result() is None  # it ended normally, without ever connecting
    assert not bridge.connected.is_set()
