"""A publish route loses nothing across an outage: messages a publisher got JetStream's ack
for become tasks, each exactly once, though the NATS server is SIGKILLed and restarted (same
port, same store) while they are being published and consumed; a message that arrives while
the database is down is delivered again until it is a task."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import pytest
from nats.js import JetStreamContext

from execution_ledger.adapters.nats.bridge import NatsBridge
from execution_ledger.adapters.nats.ingress import NatsIngress
from execution_ledger.adapters.nats.publish_stream import ACK_WAIT, CONSUMER, NATS_FAILURES
from execution_ledger.adapters.nats.server import NatsServer, start_nats_server
from execution_ledger.adapters.refusals import DATABASE_ERRORS
from execution_ledger.adapters.runtime import Runtime
from tests.adapters.nats.conftest import connected, enqueued, registry_text, stream_drained
from tests.private_postgres import private_postgres
from tests.processors.worker_harness import runtime_with_config

pytestmark = pytest.mark.asyncio

MESSAGES = 300
OUTAGE = 3.0  # seconds the server stays down
DEADLINE = 90.0  # seconds for the whole exchange, outage included


@dataclass
class Outage:
    """The server killed, then started again on the same port and store."""

    server: NatsServer
    restarted: NatsServer | None = None
    seconds: float = 0.0
    back: asyncio.Event = field(default_factory=asyncio.Event)

    async def kill_then_restart(self) -> None:
        assert self.server.store_dir is not None and self.server.port is not None
        killed_at = time.monotonic()
        await asyncio.to_thread(self.server.kill)
        await asyncio.sleep(OUTAGE)
        self.restarted = await asyncio.to_thread(
            start_nats_server, self.server.store_dir, port=self.server.port
        )
        self.seconds = time.monotonic() - killed_at
        self.back.set()

    def stop(self) -> None:
        if self.restarted is not None:
            self.restarted.stop()


async def publish_until_acked(js: JetStreamContext, subject: str, n: int, deadline: float) -> int:
    """Publish message ``n`` as a careful publisher does: again, with the same id, until
    JetStream acknowledges it. Returns how many attempts failed."""
    failed = 0
    while True:
        try:
            await js.publish(
                subject,
                json.dumps({"n": n}).encode(),
                headers={"Nats-Msg-Id": f"m-{n}"},
                timeout=0.5,
            )
            return failed
        except NATS_FAILURES:
            failed += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def tasks_reach(runtime: Runtime, count: int, deadline: float) -> None:
    """Poll the store until it holds ``count`` tasks (or the deadline passes); a read on a
    pooled connection the database dropped fails once, then the pool reconnects."""
    while time.monotonic() < deadline:
        with contextlib.suppress(*DATABASE_ERRORS):
            if len(await asyncio.to_thread(enqueued, runtime)) >= count:
                return
        await asyncio.sleep(0.1)


async def test_every_message_published_across_a_nats_kill_and_restart_becomes_one_task(
    nats_runtime: Runtime, private_nats: NatsServer, names: str
) -> None:
    deadline = time.monotonic() + DEADLINE
    stop = asyncio.Event()
    bridge = NatsBridge(nats_runtime, private_nats.url, egress=False)
    running = asyncio.create_task(bridge.run(stop))
    outage = Outage(private_nats)
    retries = 0
    try:
        await asyncio.wait_for(bridge.connected.wait(), 10)
        async with connected(
            private_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1, connect_timeout=1
        ) as publisher:
            js = publisher.jetstream()
            for n in range(MESSAGES):
                if n == MESSAGES // 3:
                    await tasks_reach(nats_runtime, 1, deadline)  # the ingress is consuming
                    killing = asyncio.create_task(outage.kill_then_restart())
                retries += await publish_until_acked(js, f"{names}.note.n", n, deadline)
            await killing
            await tasks_reach(nats_runtime, MESSAGES, deadline)
            # Every message acked: those whose ack the kill lost come again after ack_wait.
            stream = nats_runtime.settings.config.registry.nats.publish_stream
            await stream_drained(js, stream, timeout=ACK_WAIT + 30)
            consumer = await js.consumer_info(stream, CONSUMER)
    finally:
        stop.set()
        await asyncio.gather(running, return_exceptions=True)
        outage.stop()

    numbers = Counter(args["n"] for _, args in enqueued(nats_runtime))
    lost = [n for n in range(MESSAGES) if n not in numbers]
    duplicated = [n for n, times in numbers.items() if times > 1]
    print(
        f"\nsent {MESSAGES}, tasks {sum(numbers.values())}, lost {len(lost)}, "
        f"duplicates {len(duplicated)}, outage {outage.seconds:.1f} s, "
        f"publishes retried {retries}, deliveries again {consumer.num_redelivered}"
    )
    assert outage.back.is_set() and retries > 0  # publishing really went through the outage
    assert (lost, duplicated) == ([], [])
    assert sorted(numbers) == list(range(MESSAGES))


async def test_a_message_stored_while_the_database_is_down_becomes_a_task_once_it_is_back(
    private_nats: NatsServer, names: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with private_postgres() as cluster:
        monkeypatch.setenv("LEDGER_DATABASE_URL", cluster.url)
        monkeypatch.setenv("LEDGER_SCHEMA", f"nats_outage_{uuid4().hex[:8]}")
        runtime = runtime_with_config(tmp_path, registry_text(names))
        stream = runtime.settings.config.registry.nats.publish_stream
        try:
            async with (
                connected(private_nats.url) as server_side,
                connected(private_nats.url) as client,
            ):
                ingress = NatsIngress(runtime, server_side)
                await ingress.start()
                try:
                    js = client.jetstream()
                    await asyncio.to_thread(cluster.stop)
                    await js.publish(f"{names}.note.db", b'{"during": "outage"}')
                    await redelivered(js, stream)  # refused by the database, nak'ed
                    await asyncio.to_thread(cluster.start)
                    await tasks_reach(runtime, 1, time.monotonic() + 30)
                    await stream_drained(js, stream)
                finally:
                    await ingress.close()
            tasks = enqueued(runtime)
        finally:
            runtime.close()

    assert tasks == [("echo", {"during": "outage"})]


async def redelivered(js: JetStreamContext, stream: str, timeout: float = 30.0) -> None:
    """Wait until the consumer has delivered a message again (it was not acked)."""
    deadline = time.monotonic() + timeout
    while (await js.consumer_info(stream, CONSUMER)).num_redelivered < 1:
        if time.monotonic() > deadline:
            raise TimeoutError("no message was delivered again")
        await asyncio.sleep(0.05)
