"""The ledger on a three-node NATS cluster (``tests/nats_cluster.py``): the node leading a
stream is SIGKILLed while events are published and messages consumed, and still every event
is in the egress's stream exactly once, in log order, and every acknowledged message of a
publish route becomes exactly one task. The streams keep three copies (automatically on a
cluster, or by ``[nats] stream_replicas``), so another node takes the lead; the clients
connect through the list of servers, as ``LEDGER_NATS_URL`` gives it. An existing stream
of one copy is raised to three."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from execution_ledger.adapters.nats.bridge import NatsBridge
from execution_ledger.adapters.nats.egress import EGRESS_NAME, EventEgress
from execution_ledger.adapters.nats.ingress import NatsIngress
from execution_ledger.adapters.runtime import Runtime
from tests.adapters.nats.conftest import connected, enqueued, registry_text, stream_drained
from tests.adapters.nats.test_egress import (
    check_exactly_once_in_order,
    enqueue,
    log_positions,
    stream_messages,
    stream_reaches,
)
from tests.adapters.nats.test_ingress_outage import publish_until_acked, tasks_reach
from tests.nats_cluster import START_TIMEOUT, NatsCluster, stream_leader, stream_settled
from tests.processors.worker_harness import runtime_with_config

pytestmark = pytest.mark.asyncio

EVENTS_BEFORE = 20  # events out before the kill
EVENTS_DURING = 80  # events written while the stream leader dies and another is elected
MESSAGES = 150  # messages published to a publish route around the kill
DEADLINE = 60.0  # seconds for each exchange, leader election included
RECONNECTING = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.1, "connect_timeout": 1}


async def published_at_least(egress: EventEgress | None, count: int, deadline: float) -> int:
    """Until the egress has had ``count`` acks; returns how many it had."""
    while egress is None or egress.published < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the egress did not publish {count} events")
        await asyncio.sleep(0.02)
    return egress.published


async def test_the_egress_publishes_every_event_once_while_the_stream_leader_is_killed(
    nats_cluster: NatsCluster, nats_runtime: Runtime
) -> None:
    settings = nats_runtime.settings.config.registry.nats
    deadline = time.monotonic() + DEADLINE
    stop = asyncio.Event()
    bridge = NatsBridge(nats_runtime, nats_cluster.servers, ingress=False)
    running = asyncio.create_task(bridge.run(stop))
    try:
        async with connected(nats_cluster.urls, **RECONNECTING) as nc:
            # The test's own calls (stream info) wait as long as the cluster may take to
            # answer under load; the egress under test keeps its own timeouts.
            js = nc.jetstream(timeout=START_TIMEOUT)
            await asyncio.to_thread(enqueue, nats_runtime, EVENTS_BEFORE)
            await stream_reaches(js, nats_runtime, settings.stream, timeout=DEADLINE)
            leader = await stream_leader(js, settings.stream, replicas=3)
            writer = asyncio.create_task(
                asyncio.to_thread(enqueue, nats_runtime, EVENTS_DURING, 0.02)
            )
            before_kill = await published_at_least(bridge.egress, EVENTS_BEFORE + 10, deadline)
            await asyncio.to_thread(nats_cluster.kill, leader)
            await writer
            await stream_reaches(js, nats_runtime, settings.stream, timeout=DEADLINE)
            messages = await stream_messages(js, settings.stream)
            info = await js.stream_info(settings.stream)
    finally:
        stop.set()
        await asyncio.gather(running, return_exceptions=True)

    total = EVENTS_BEFORE + EVENTS_DURING
    print(f"\nkilled {leader} after {before_kill} events; new leader {info.cluster.leader}")
    assert info.config.num_replicas == 3  # chosen on its own: the server is in a cluster
    assert info.cluster is not None and info.cluster.leader not in (None, leader)
    assert before_kill < total == len(log_positions(nats_runtime))
    assert len(messages) == total
    check_exactly_once_in_order(nats_runtime, messages, settings.event_subject_prefix)


async def test_publish_route_messages_become_one_task_each_while_the_stream_leader_is_killed(
    nats_cluster: NatsCluster, ledger_env: None, tmp_path: Path, names: str
) -> None:
    text = registry_text(names).replace("[nats]\n", "[nats]\nstream_replicas = 3\n", 1)
    runtime = runtime_with_config(tmp_path, text)
    stream = runtime.settings.config.registry.nats.publish_stream
    deadline = time.monotonic() + DEADLINE
    retries = 0
    try:
        async with (
            connected(nats_cluster.urls, **RECONNECTING) as server_side,
            connected(nats_cluster.urls, **RECONNECTING) as publisher,
        ):
            # ack_wait 5 s: a delivery whose ack the dead leader took with it comes again
            # within the test's time (it is then recognised by its key).
            ingress = NatsIngress(runtime, server_side, ack_wait=5.0)
            await ingress.start()
            try:
                js = publisher.jetstream()
                leader = await stream_leader(js, stream, replicas=3)
                for n in range(MESSAGES):
                    if n == MESSAGES // 3:
                        await tasks_reach(runtime, 1, deadline)  # the ingress is consuming
                        await asyncio.to_thread(nats_cluster.kill, leader)
                    retries += await publish_until_acked(js, f"{names}.note.n", n, deadline)
                await tasks_reach(runtime, MESSAGES, deadline)
                await stream_drained(js, stream, timeout=DEADLINE)
                info = await js.stream_info(stream)
            finally:
                await ingress.close()
        numbers = Counter(args["n"] for _, args in enqueued(runtime))
    finally:
        runtime.close()

    lost = [n for n in range(MESSAGES) if n not in numbers]
    duplicated = [n for n, times in numbers.items() if times > 1]
    print(
        f"\nkilled {leader}; new leader {info.cluster.leader}; sent {MESSAGES}, "
        f"tasks {sum(numbers.values())}, lost {len(lost)}, duplicates {len(duplicated)}, "
        f"publishes retried {retries}"
    )
    assert info.config.num_replicas == 3
    assert info.cluster is not None and info.cluster.leader not in (None, leader)
    assert retries > 0  # publishing really went on through the election
    assert (lost, duplicated) == ([], [])
    assert sorted(numbers) == list(range(MESSAGES))


async def test_an_existing_stream_of_one_copy_is_raised_to_three_on_a_cluster(
    nats_cluster: NatsCluster, nats_runtime: Runtime
) -> None:
    settings = nats_runtime.settings.config.registry.nats
    await asyncio.to_thread(enqueue, nats_runtime, 3)
    async with connected(nats_cluster.urls, **RECONNECTING) as nc:
        # Creating a replicated stream waits for the cluster's meta group: under the full
        # suite's load that took longer than the client's default 5 s.
        js = nc.jetstream(timeout=START_TIMEOUT)
        await js.add_stream(
            name=settings.stream, subjects=[f"{settings.event_subject_prefix}.>"], num_replicas=1
        )
        egress = EventEgress(nats_runtime.log_follower(EGRESS_NAME), js, settings, replicas=3)
        await egress.publish_pending()
        info = await stream_settled(js, settings.stream, replicas=3)
        messages = await stream_messages(js, settings.stream)

    assert info.config.num_replicas == 3
    check_exactly_once_in_order(nats_runtime, messages, settings.event_subject_prefix)
