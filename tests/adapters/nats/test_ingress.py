"""NATS ingress on a real nats-server: routes and the request subject turn messages into
recorded tasks; requests are answered with the task's end, or with a refusal."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import nats.errors
import pytest
from nats.aio.client import Client

from adapters.nats.bridge import NatsBridge
from adapters.nats.ingress import NatsIngress
from adapters.nats.server import NatsServer
from adapters.node import WorkerNode
from adapters.runtime import Runtime
from tests.adapters.nats.conftest import connected, delete_stream, enqueued, registry_text
from tests.processors.worker_harness import runtime_with_config

pytestmark = pytest.mark.asyncio


@contextlib.asynccontextmanager
async def ingress_on(runtime: Runtime, url: str) -> AsyncIterator[Client]:
    """An ingress listening on ``url``; yields a client connection to send with."""
    async with connected(url) as server_side, connected(url) as client:
        ingress = NatsIngress(runtime, server_side)
        await ingress.start()
        try:
            yield client
        finally:
            await ingress.close()


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


async def test_a_publish_route_enqueues_the_message_and_answers_nothing(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    async with ingress_on(nats_runtime, nats_url) as client:
        with pytest.raises(nats.errors.TimeoutError):
            await client.request(f"{names}.note.red", b'{"colour": "red"}', timeout=0.5)
        await client.publish(f"{names}.note.blue", b'{"colour": "blue"}')
        await until(lambda: len(enqueued(nats_runtime)) == 2)

    assert sorted(enqueued(nats_runtime), key=str) == [
        ("echo", {"colour": "blue"}),
        ("echo", {"colour": "red"}),
    ]


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
        await until(lambda: len(enqueued(nats_runtime)) == 3)
        await asyncio.sleep(0.2)  # a second copy of the note would be recorded by now

    assert first["task_id"] == again["task_id"] != other["task_id"]
    assert nats_runtime.ledger.task(UUID(first["task_id"])).idempotency_key == f"{names}-order-1"
    assert sorted(enqueued(nats_runtime), key=str) == [
        ("echo", {"k": 1}),
        ("echo", {"n": 1}),
        ("echo", {"n": 1}),
    ]
