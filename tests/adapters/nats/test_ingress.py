"""NATS ingress on a real nats-server: routes and the request subject turn messages into
recorded tasks; requests are answered with the task's end, or with a refusal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import nats.errors
import pytest
from nats.aio.client import Client

from execution_ledger.adapters.nats.bridge import NatsBridge
from execution_ledger.adapters.nats.ingress import NatsIngress
from execution_ledger.adapters.nats.server import NatsServer
from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.runtime import Runtime
from tests.adapters.nats.conftest import (
    connected,
    delete_stream,
    enqueued,
    registry_text,
    stream_drained,
)
from tests.processors.worker_harness import runtime_with_config

pytestmark = pytest.mark.asyncio


@contextlib.asynccontextmanager
async def ingress_on(runtime: Runtime, url: str, **options: Any) -> AsyncIterator[Client]:
    """An ingress listening on ``url``; yields a client connection to send with. The
    publish routes' stream is deleted afterwards (unless ``keep_stream``)."""
    keep = options.pop("keep_stream", False)
    settings = runtime.settings.config.registry.nats
    try:
        async with connected(url) as server_side, connected(url) as client:
            ingress = NatsIngress(runtime, server_side, **options)
            await ingress.start()
            try:
                yield client
            finally:
                await ingress.close()
    finally:
        if not keep:
            await delete_stream(url, settings.stream)


async def ask(client: Client, subject: str, body: Any, timeout: float = 5.0, **kw: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await client.request(subject, data, timeout=timeout, **kw)
    return json.loads(reply.data)


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(condition):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


async def test_a_request_route_answers_with_the_result_of_the_task_a_worker_ran(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    stop = asyncio.Event()
    bridge = NatsBridge(nats_runtime, nats_url)
    node = WorkerNode(nats_runtime, concurrency=2)
    jobs = [asyncio.create_task(bridge.run(stop)), asyncio.create_task(node.run(stop))]
    try:
        await asyncio.wait_for(bridge.connected.wait(), 10)
        async with connected(nats_url) as client:
            succeeded = await ask(client, f"{names}.add", {"a": 2, "b": 3}, timeout=10)
            failed = await ask(client, f"{names}.fail", {"message": "no"}, timeout=10)
    finally:
        stop.set()
        await asyncio.gather(*jobs)
        await delete_stream(nats_url, f"{names.upper()}_EVENTS")

    assert set(succeeded) == {"task_id", "state", "result", "failure"}
    assert (succeeded["state"], succeeded["result"], succeeded["failure"]) == (
        "succeeded",
        {"sum": 5},
        None,
    )
    assert nats_runtime.ledger.task(UUID(succeeded["task_id"])).principal == "nats"
    assert failed["state"] == "failed"
    assert failed["failure"]["class"] == "RuntimeError"


async def test_a_publish_route_enqueues_the_message_and_answers_only_the_streams_ack(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    stream = nats_runtime.settings.config.registry.nats.publish_stream
    async with ingress_on(nats_runtime, nats_url) as client:
        stored = await ask(client, f"{names}.note.red", {"colour": "red"})
        await client.publish(f"{names}.note.blue", b'{"colour": "blue"}')
        await until(lambda: len(enqueued(nats_runtime)) == 2)

    assert set(stored) == {"stream", "seq"}  # JetStream stored it; no task answer
    assert stored["stream"] == stream
    assert sorted(enqueued(nats_runtime), key=str) == [
        ("echo", {"colour": "blue"}),
        ("echo", {"colour": "red"}),
    ]


async def test_messages_published_while_no_ledger_runs_become_tasks_when_it_starts(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    async with ingress_on(nats_runtime, nats_url, keep_stream=True):
        pass  # the stream exists from now on
    try:
        async with connected(nats_url) as publisher:
            js = publisher.jetstream()
            for n in range(3):
                await js.publish(f"{names}.note.later", json.dumps({"n": n}).encode())
        async with ingress_on(nats_runtime, nats_url, keep_stream=True):
            await until(lambda: len(enqueued(nats_runtime)) == 3)
    finally:
        await delete_stream(nats_url, nats_runtime.settings.config.registry.nats.stream)

    assert sorted(args["n"] for _, args in enqueued(nats_runtime)) == [0, 1, 2]


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{not json", "bad_json"), (b"\xff\xfe", "bad_json"), (b"[1, 2]", "schema_violation")],
    ids=["bad_json", "not_utf8", "not_an_object"],
)
async def test_a_publish_route_message_that_cannot_be_a_task_is_acked_and_enqueues_nothing(
    nats_runtime: Runtime,
    nats_url: str,
    names: str,
    body: bytes,
    code: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="execution_ledger.adapters.nats.ingress")
    stream = nats_runtime.settings.config.registry.nats.publish_stream
    async with ingress_on(nats_runtime, nats_url) as client:
        js = client.jetstream()
        await js.publish(f"{names}.note.bad", body)
        await js.publish(f"{names}.note.good", b'{"after": 1}')
        await stream_drained(js, stream)  # both were acked: none is delivered again
        consumer = await js.consumer_info(stream, "ledger-ingress")

    assert enqueued(nats_runtime) == [("echo", {"after": 1})]
    assert consumer.num_redelivered == 0
    assert f"NATS message on {names}.note.bad refused: {code}:" in caplog.text


async def test_a_request_answers_with_the_state_reached_when_the_route_timeout_runs_out(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    async with ingress_on(nats_runtime, nats_url) as client:
        answer = await ask(client, f"{names}.quick", {"n": 1})

    assert answer["state"] == "ready"
    assert answer["result"] is None
    assert nats_runtime.ledger.task(UUID(answer["task_id"])).args == {"n": 1}


async def test_the_request_subject_takes_a_body_naming_the_type(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    subject = f"{names}.execution.request.task"
    async with ingress_on(nats_runtime, nats_url) as client:
        answer = await ask(
            client, subject, {"type": "add", "args": {"a": 1, "b": 1}, "priority": 7, "wait": 0.2}
        )
        await client.publish(subject, json.dumps({"type": "echo", "args": {"x": 1}}).encode())
        await until(lambda: len(enqueued(nats_runtime)) == 2)

    task = nats_runtime.ledger.task(UUID(answer["task_id"]))
    assert (task.type_name, task.args, task.priority, task.principal, task.role) == (
        "add",
        {"a": 1, "b": 1},
        7,
        "nats",
        "admin",
    )
    assert answer["state"] == "ready"
    assert ("echo", {"x": 1}) in enqueued(nats_runtime)


async def test_execution_request_task_is_the_request_subject_by_default(
    ledger_env: None, tmp_path: Path, names: str, private_nats: NatsServer
) -> None:
    runtime = runtime_with_config(tmp_path, registry_text(names, default_request_subject=True))
    try:
        async with ingress_on(runtime, private_nats.url) as client:
            answer = await ask(
                client, "execution.request.task", {"type": "echo", "args": {"y": 2}, "wait": 0}
            )
        assert runtime.ledger.task(UUID(answer["task_id"])).args == {"y": 2}
    finally:
        runtime.close()


@pytest.mark.parametrize(
    ("suffix", "body", "code"),
    [
        ("add", b"{not json", "bad_json"),
        ("add", {"a": "two", "b": 3}, "schema_violation"),
        ("add", [1, 2], "schema_violation"),
        ("execution.request.task", {"type": "no_such_type"}, "unknown_task_type"),
        ("execution.request.task", {"args": {}}, "invalid_submission"),
        ("execution.request.task", {"type": "echo", "bogus": 1}, "invalid_submission"),
        ("execution.request.task", b"\xff\xfe", "bad_json"),
        (
            "execution.request.task",
            {"type": "x", "adapter": "shell", "adapter_settings": {"argv": ["id"]}},
            "forbidden",
        ),
    ],
)
async def test_a_message_that_cannot_be_a_task_is_answered_with_an_error_and_enqueues_nothing(
    nats_runtime: Runtime, nats_url: str, names: str, suffix: str, body: Any, code: str
) -> None:
    async with ingress_on(nats_runtime, nats_url) as client:
        answer = await ask(client, f"{names}.{suffix}", body)

    assert set(answer) == {"error"}
    assert answer["error"]["code"] == code
    assert answer["error"]["message"]
    assert enqueued(nats_runtime) == []


def denials(runtime: Runtime) -> list[tuple[str, str, str]]:
    """The ``AccessDenied`` events of the log: (principal, action, reason)."""
    found = []
    for recorded in runtime.store.read(0, 1000):
        if type(recorded.event).__name__ == "AccessDenied":
            event: Any = recorded.event
            found.append((event.principal, event.action, event.reason))
    return found


async def test_a_message_refused_by_policy_is_recorded_as_a_denial_and_a_malformed_one_is_not(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    adhoc = {"type": "x", "adapter": "shell", "adapter_settings": {"argv": ["id"]}}
    async with ingress_on(nats_runtime, nats_url) as client:
        refused = await ask(client, f"{names}.execution.request.task", adhoc)
        malformed = await ask(client, f"{names}.execution.request.task", {"args": {}})

    assert (refused["error"]["code"], malformed["error"]["code"]) == (
        "forbidden",
        "invalid_submission",
    )
    recorded = denials(nats_runtime)
    assert len(recorded) == 1
    principal, action, reason = recorded[0]
    assert principal == "nats" and action == f"nats {names}.execution.request.task"
    assert "ad-hoc" in reason
    assert enqueued(nats_runtime) == []


async def test_a_redelivered_message_with_the_same_nats_msg_id_records_one_task(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    headers = {"Nats-Msg-Id": f"{names}-order-1"}
    async with ingress_on(nats_runtime, nats_url) as client:
        first = await ask(client, f"{names}.quick", {"n": 1}, headers=headers)
        again = await ask(client, f"{names}.quick", {"n": 1}, headers=headers)
        for _ in range(2):
            await client.publish(f"{names}.note.x", b'{"k": 1}', headers={"Nats-Msg-Id": "n-1"})
        other = await ask(client, f"{names}.quick", {"n": 1}, headers={"Nats-Msg-Id": "other"})
        # A later note, stored after both copies: once it is a task and the stream holds
        # nothing more, every copy has been handled.
        js = client.jetstream()
        await js.publish(f"{names}.note.y", b'{"k": 2}', headers={"Nats-Msg-Id": "n-2"})
        await until(lambda: ("echo", {"k": 2}) in enqueued(nats_runtime))
        await stream_drained(js, nats_runtime.settings.config.registry.nats.publish_stream)

    assert first["task_id"] == again["task_id"] != other["task_id"]
    assert nats_runtime.ledger.task(UUID(first["task_id"])).idempotency_key == f"{names}-order-1"
    assert sorted(enqueued(nats_runtime), key=str) == [
        ("echo", {"k": 1}),
        ("echo", {"k": 2}),
        ("echo", {"n": 1}),
        ("echo", {"n": 1}),
    ]


async def test_a_message_repeated_after_the_streams_duplicate_window_records_one_task(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    """The stream forgets a Nats-Msg-Id after its window (a publisher retrying after a
    long outage); the ledger's idempotency key still knows it."""
    stream = nats_runtime.settings.config.registry.nats.publish_stream
    headers = {"Nats-Msg-Id": f"{names}-late"}
    async with ingress_on(nats_runtime, nats_url, duplicate_window=0.5) as client:
        js = client.jetstream()
        first = await js.publish(f"{names}.note.z", b'{"z": 1}', headers=headers)
        await until(lambda: len(enqueued(nats_runtime)) == 1)
        await asyncio.sleep(0.7)  # past the window: the stream takes the copy again
        again = await js.publish(f"{names}.note.z", b'{"z": 1}', headers=headers)
        await stream_drained(js, stream)

    assert (first.duplicate, again.duplicate) == (None, None)  # both stored
    assert again.seq == first.seq + 1
    assert enqueued(nats_runtime) == [("echo", {"z": 1})]


async def test_an_existing_ingress_stream_gets_the_publish_routes_subjects(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    stream = nats_runtime.settings.config.registry.nats.publish_stream
    async with connected(nats_url) as admin:
        await admin.jetstream().add_stream(name=stream, subjects=[f"{names}.old"])
    async with ingress_on(nats_runtime, nats_url) as client:
        js = client.jetstream()
        info = await js.stream_info(stream)
        await js.publish(f"{names}.note.kept", b'{"kept": true}')
        await until(lambda: len(enqueued(nats_runtime)) == 1)

    assert info.config.subjects == [f"{names}.note.*"]
    assert info.config.duplicate_window >= 120
    assert enqueued(nats_runtime) == [("echo", {"kept": True})]


async def test_the_ingress_takes_its_stream_once_nats_stops_refusing_it(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    """Another stream holds the publish route's subjects: NATS refuses the ingress's stream
    (overlapping subjects); once that stream is gone, the ingress creates its own."""
    other = f"{names.upper()}_OTHER"
    async with connected(nats_url) as admin:
        admin_js = admin.jetstream()
        await admin_js.add_stream(name=other, subjects=[f"{names}.note.*"])
        try:
            async with ingress_on(nats_runtime, nats_url) as client:
                await admin_js.delete_stream(other)
                js = client.jetstream()
                ack = await until_stored(js, f"{names}.note.late", b'{"late": 1}')
                await until(lambda: len(enqueued(nats_runtime)) == 1)
        finally:
            await delete_stream(nats_url, other)

    assert ack.stream == nats_runtime.settings.config.registry.nats.publish_stream
    assert enqueued(nats_runtime) == [("echo", {"late": 1})]


async def until_stored(js: Any, subject: str, body: bytes, timeout: float = 15.0) -> Any:
    """JetStream-publish until a stream acks (no stream holds the subject yet)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await js.publish(subject, body, timeout=0.5, headers={"Nats-Msg-Id": "one"})
        except (nats.errors.Error, TimeoutError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)
