"""Singletons and debounce over the NATS request subject, whose body is the HTTP API's:
a held key is answered with its task, a debounced burst is one task, and a debounce with a
``Nats-Msg-Id`` (an idempotency key) is refused with nothing stored."""

from __future__ import annotations

from uuid import UUID

import pytest

from execution_ledger.adapters.runtime import Runtime
from tests.adapters.nats.conftest import enqueued
from tests.adapters.nats.test_ingress import ask, ingress_on

pytestmark = pytest.mark.asyncio


async def test_a_held_singleton_key_and_a_debounced_burst_answer_with_one_task(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    subject = f"{names}.execution.request.task"
    single = {"type": "echo", "args": {"c": "acme"}, "singleton": "r:{c}", "wait": 0}
    burst = {"type": "echo", "debounce": {"key": "sync", "window": "1m"}, "wait": 0}
    async with ingress_on(nats_runtime, nats_url) as client:
        first = await ask(client, subject, single)
        again = await ask(client, subject, single)
        one = await ask(client, subject, {**burst, "args": {"n": 1}})
        two = await ask(client, subject, {**burst, "args": {"n": 2}})
    assert first["task_id"] == again["task_id"]
    assert one["task_id"] == two["task_id"] and one["state"] == "scheduled"
    assert nats_runtime.ledger.task(UUID(one["task_id"])).args == {"n": 2}
    assert len(enqueued(nats_runtime)) == 2


async def test_a_debounce_with_a_message_id_is_refused(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    body = {"type": "echo", "debounce": {"key": "sync", "window": "1m"}, "wait": 0}
    async with ingress_on(nats_runtime, nats_url) as client:
        answer = await ask(
            client, f"{names}.execution.request.task", body, headers={"Nats-Msg-Id": "m-1"}
        )
    assert answer["error"]["code"] == "invalid_submission"
    assert "idempotency key" in answer["error"]["message"]
    assert enqueued(nats_runtime) == []
