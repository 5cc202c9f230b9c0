"""NATS egress on a real nats-server: every ledger event in the stream exactly once, in log
order, also across a restart of the egress and a NATS server killed and restarted."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import nats.js.errors
import pytest
from nats.js import JetStreamContext

from execution_ledger.adapters.nats.egress import EGRESS_NAME, EventEgress
from execution_ledger.adapters.nats.server import NatsServer, start_nats_server
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from tests.adapters.nats.conftest import connected, delete_stream

pytestmark = pytest.mark.asyncio


def log_positions(runtime: Runtime) -> list[int]:
    return [recorded.position for recorded in runtime.store.read(0, 100_000)]


def enqueue(runtime: Runtime, count: int, pause: float = 0.0) -> None:
    for n in range(count):
        runtime.ledger.enqueue(TaskRequest("echo", {"n": n}))
        if pause:
            threading.Event().wait(pause)


async def stream_messages(js: JetStreamContext, stream: str) -> list[Any]:
    info = await js.stream_info(stream)
    return [await js.get_msg(stream, seq) for seq in range(1, info.state.last_seq + 1)]


async def stream_reaches(js: JetStreamContext, runtime: Runtime, stream: str, timeout: float = 15):
    """Until the stream's last message is the log's last event."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        head = await asyncio.to_thread(runtime.store.head_position)
        try:
            last = await js.get_last_msg(stream, ">")
            if last.headers and last.headers["Nats-Msg-Id"].endswith(f":{head}"):
                return
        except (nats.js.errors.Error, nats.errors.Error):
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"stream {stream} did not reach position {head}")
        await asyncio.sleep(0.05)


def check_exactly_once_in_order(runtime: Runtime, messages: list[Any], prefix: str) -> None:
    positions = log_positions(runtime)
    schema = runtime.store.schema
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [f"{schema}:{p}" for p in positions]
    bodies = [json.loads(m.data) for m in messages]
    assert [b["position"] for b in bodies] == positions
    assert [m.subject for m in messages] == [f"{prefix}.{b['type']}" for b in bodies]


async def test_every_event_is_published_once_in_log_order_and_a_restart_adds_no_duplicate(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    settings = nats_runtime.settings.config.registry.nats
    await asyncio.to_thread(enqueue, nats_runtime, 5)
    try:
        async with connected(nats_url) as nc:
            js = nc.jetstream()
            stop = asyncio.Event()
            # Two instances: one publishes, the other stands by (advisory lock).
            egresses = [
                EventEgress(nats_runtime.log_follower(EGRESS_NAME), js, settings) for _ in range(2)
            ]
            running = [asyncio.create_task(e.run(stop)) for e in egresses]
            await stream_reaches(js, nats_runtime, settings.stream)
            await asyncio.to_thread(enqueue, nats_runtime, 20)  # woken by NOTIFY
            await stream_reaches(js, nats_runtime, settings.stream)
            assert sorted(e.active for e in egresses) == [False, True]
            stop.set()
            await asyncio.gather(*running)

            again = EventEgress(nats_runtime.log_follower(EGRESS_NAME), js, settings)
            reached = await again.publish_pending()
            messages = await stream_messages(js, settings.stream)
            info = await js.stream_info(settings.stream)
    finally:
        await delete_stream(nats_url, settings.stream)

    check_exactly_once_in_order(nats_runtime, messages, settings.event_subject_prefix)
    assert len(messages) == 25
    assert reached == again.position() == nats_runtime.store.head_position()
    assert again.published == 0
    assert info.config.subjects == [f"{names}.events.>"]
    assert info.config.duplicate_window >= 120
    body = json.loads(messages[0].data)
    assert body["type"] == "TaskEnqueued"
    assert body["data"]["args"] == {"n": 0}
    assert {"position", "type", "aggregate_id", "version", "time", "data"} <= set(body)


async def test_a_position_acked_but_not_stored_is_not_published_again(
    nats_runtime: Runtime, nats_url: str
) -> None:
    """A crash between the ack and the stored position: the stream's last message shows
    how far it got, even past the duplicate window."""
    settings = nats_runtime.settings.config.registry.nats
    await asyncio.to_thread(enqueue, nats_runtime, 3)
    try:
        async with connected(nats_url) as nc:
            js = nc.jetstream()
            first = EventEgress(
                nats_runtime.log_follower(EGRESS_NAME), js, settings, duplicate_window=1.0
            )
            await first.publish_pending()
            with nats_runtime.store.transaction() as cursor:  # as if never stored
                cursor.execute(
                    f'UPDATE "{nats_runtime.store.schema}".projection_positions '
                    "SET position = 0 WHERE name = %s",
                    (EGRESS_NAME,),
                )
            await asyncio.sleep(1.2)  # the duplicate window is over
            await asyncio.to_thread(enqueue, nats_runtime, 1)
            second = EventEgress(
                nats_runtime.log_follower(EGRESS_NAME), js, settings, duplicate_window=1.0
            )
            await second.publish_pending()
            messages = await stream_messages(js, settings.stream)
    finally:
        await delete_stream(nats_url, settings.stream)

    check_exactly_once_in_order(nats_runtime, messages, settings.event_subject_prefix)
    assert second.published == 1


async def polled(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait (polling every 20 ms) until ``condition`` holds; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.02)


async def test_egress_resumes_after_the_nats_server_is_killed_and_restarted_without_loss_or_duplicates(
    nats_runtime: Runtime, private_nats: NatsServer
) -> None:
    settings = nats_runtime.settings.config.registry.nats
    assert private_nats.store_dir is not None and private_nats.port is not None
    server = private_nats
    async with connected(
        server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1, connect_timeout=1
    ) as nc:
        js = nc.jetstream()
        egress = EventEgress(
            nats_runtime.log_follower(EGRESS_NAME),
            js,
            settings,
            publish_timeout=0.5,
            max_backoff=0.3,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(egress.run(stop))
        writer = asyncio.create_task(asyncio.to_thread(enqueue, nats_runtime, 60, 0.02))
        await polled(lambda: egress.published > 0, "the first events to go out")
        published_before = egress.published
        server.kill()
        at_kill = nats_runtime.store.head_position()
        await polled(  # the log grows while NATS is down
            lambda: writer.done() or nats_runtime.store.head_position() >= at_kill + 10,
            "the log to grow while NATS is down",
        )
        restarted = start_nats_server(server.store_dir, port=server.port)
        try:
            await writer
            await stream_reaches(js, nats_runtime, settings.stream, timeout=20)
            messages = await stream_messages(js, settings.stream)
        finally:
            stop.set()
            await running
            restarted.stop()

    assert 0 < published_before < len(messages)
    assert len(messages) == len(log_positions(nats_runtime)) == 60
    check_exactly_once_in_order(nats_runtime, messages, settings.event_subject_prefix)
