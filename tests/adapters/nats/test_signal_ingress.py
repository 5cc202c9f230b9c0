"""Signals over NATS on a real nats-server: a message on the signal subject delivers a
named signal to a waiting task (recorded as ``TaskSignalled`` by principal ``nats``), and a
bad one is answered with a refusal that records nothing."""

from __future__ import annotations

import contextlib
import json
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from execution_ledger.adapters.nats.ingress import NatsIngress
from execution_ledger.adapters.nats.signal_ingress import signal_subject
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState, event_name
from tests.adapters.nats.conftest import connected, delete_stream, registry_text
from tests.processors.worker_harness import runtime_with_config

pytestmark = pytest.mark.asyncio

GATE = textwrap.dedent(
    """
    [task_types.gate]
    adapter = "python"
    signals = ["approval"]
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
    """
)


@pytest.fixture
def signal_runtime(ledger_env: None, tmp_path: Path, names: str) -> Iterator[Runtime]:
    # The [nats] table ends the registry text: the gate type goes before it.
    text = registry_text(names).replace("[nats]", GATE + "\n[nats]", 1)
    runtime = runtime_with_config(tmp_path, text)
    yield runtime
    runtime.close()


@contextlib.asynccontextmanager
async def ingress_on(runtime: Runtime, url: str) -> AsyncIterator[Client]:
    try:
        async with connected(url) as server_side, connected(url) as client:
            ingress = NatsIngress(runtime, server_side)
            await ingress.start()
            try:
                yield client
            finally:
                await ingress.close()
    finally:
        await delete_stream(url, runtime.settings.config.registry.nats.stream)


async def ask(client: Client, subject: str, body: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return json.loads((await client.request(subject, data, timeout=5)).data)


async def test_a_signal_message_makes_a_waiting_task_ready_and_bad_ones_are_refused(
    signal_runtime: Runtime, nats_url: str, names: str
) -> None:
    ledger = signal_runtime.ledger
    gate = ledger.enqueue(TaskRequest("gate", {"x": 1}))
    subject = signal_subject(signal_runtime.settings.config.registry.nats.request_subject)
    assert subject == f"{names}.execution.request.signal"
    async with ingress_on(signal_runtime, nats_url) as client:
        refusals = [
            await ask(client, subject, b"not json"),
            await ask(client, subject, {"task_id": "nope", "name": "approval"}),
            await ask(client, subject, {"task_id": str(gate.id), "name": "other"}),
            await ask(client, subject, {"task_id": str(gate.id), "name": "approval", "x": 1}),
        ]
        assert [r["error"]["code"] for r in refusals] == [
            "bad_json",
            "bad_json",
            "invalid_transition",
            "bad_json",
        ]
        assert [event_name(type(r.event)) for r in ledger.history(gate.id)] == ["TaskEnqueued"]
        answer = await ask(
            client, subject, {"task_id": str(gate.id), "name": "approval", "data": {"ok": 1}}
        )
    assert answer == {"task_id": str(gate.id), "state": "ready", "awaiting_signals": []}
    task = ledger.task(gate.id)
    assert task.state is TaskState.READY and task.signals == {"approval": {"ok": 1}}
    signalled = ledger.history(gate.id)[-1].event
    assert (event_name(type(signalled)), signalled.by) == ("TaskSignalled", "nats")  # type: ignore[attr-defined]
