"""Trace context over NATS on a real nats-server: a message's ``traceparent`` header is the
parent of its ``ledger.enqueue`` span (exported as real OTLP to an in-process collector)
and of the attempt's run; the nats executor sends the attempt's context as headers."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from execution_ledger.adapters.executors.nats import NatsExecutor
from execution_ledger.adapters.nats.bridge import NatsBridge
from execution_ledger.adapters.nats.ingress import registered
from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.adapters.telemetry.context import active, start_telemetry, stop_telemetry
from execution_ledger.domain.execution import Execution, Success
from execution_ledger.domain.task import event_name
from execution_ledger.domain.trace_context import attempt_span_id
from tests.adapters.nats.conftest import connected, delete_stream, registry_text
from tests.adapters.nats.test_ingress import ingress_on, until
from tests.adapters.nats.test_nats_executor import execution
from tests.adapters.telemetry.otlp_collector import running_collector
from tests.processors.worker_harness import runtime_with_config

pytestmark = pytest.mark.asyncio

TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{CALLER_SPAN}-01"
CONSUMER = 5  # OTLP span kind


def _flush() -> None:
    telemetry = active()
    assert telemetry is not None
    telemetry.provider.force_flush()  # type: ignore[attr-defined]


async def test_a_messages_traceparent_is_the_parent_of_its_enqueue_and_of_the_run(
    ledger_env: None, tmp_path: Path, nats_url: str, names: str
) -> None:
    with running_collector() as collector:
        telemetry = f'\n[telemetry]\nendpoint = "{collector.url}"\n'
        runtime = runtime_with_config(tmp_path, registry_text(names) + telemetry)
        assert start_telemetry(runtime.settings.config, environ={})
        stop = asyncio.Event()
        bridge = NatsBridge(runtime, nats_url)
        node = WorkerNode(runtime, concurrency=2)
        jobs = [asyncio.create_task(bridge.run(stop)), asyncio.create_task(node.run(stop))]
        try:
            await asyncio.wait_for(bridge.connected.wait(), 10)
            async with connected(nats_url) as client:
                reply = await client.request(
                    f"{names}.add",
                    json.dumps({"a": 1, "b": 2}).encode(),
                    timeout=10,
                    headers={"traceparent": TRACEPARENT},
                )
            answer = json.loads(reply.data)
            names_wanted = {"ledger.enqueue", "ledger.run"}
            spans = await asyncio.to_thread(
                collector.wait_for,
                lambda spans: names_wanted <= {s.name for s in spans if s.trace_id == TRACE},
                _flush,
            )
        finally:
            stop.set()
            await asyncio.gather(*jobs)
            stop_telemetry()
            runtime.close()
            await delete_stream(nats_url, f"{names.upper()}_EVENTS")

    assert answer["state"] == "succeeded"
    task_id = UUID(answer["task_id"])
    found = {s.name: s for s in spans if s.trace_id == TRACE}
    enqueue, run = found["ledger.enqueue"], found["ledger.run"]
    assert (enqueue.parent_span_id, enqueue.kind) == (CALLER_SPAN, CONSUMER)
    assert enqueue.attributes["ledger.source"] == "nats"
    assert enqueue.attributes["ledger.entry"] == f"{names}.add"
    assert (run.parent_span_id, run.span_id) == (enqueue.span_id, attempt_span_id(task_id, 1))
    assert run.attributes["ledger.task_type"] == "add"


async def test_a_publish_routes_message_stores_its_context_with_telemetry_off(
    nats_runtime: Runtime, nats_url: str, names: str
) -> None:
    async with ingress_on(nats_runtime, nats_url) as client:
        await client.publish(
            f"{names}.note.red", b"{}", headers={"traceparent": TRACEPARENT, "tracestate": "v=2"}
        )
        await client.publish(f"{names}.note.bad", b"{}", headers={"traceparent": "00-nonsense"})
        await until(lambda: len(_enqueued_traces(nats_runtime)) == 2)

    assert sorted(_enqueued_traces(nats_runtime), key=str) == [
        None,  # an invalid traceparent is dropped; the message is still a task
        {"traceparent": TRACEPARENT, "tracestate": "v=2"},
    ]


def _enqueued_traces(runtime: Runtime) -> list[dict[str, str] | None]:
    return [
        recorded.event.trace  # type: ignore[attr-defined]
        for recorded in runtime.store.read(0, 100_000)
        if event_name(type(recorded.event)) == "TaskEnqueued"
    ]


async def test_the_nats_executor_sends_the_attempts_context_as_headers(
    nats_url: str, names: str
) -> None:
    trace = {"traceparent": TRACEPARENT, "tracestate": "v=1"}
    seen: list[dict[str, Any]] = []
    stream = f"{names.upper()}_TRACED"
    async with connected(nats_url) as handler:

        async def answer(msg: Any) -> None:
            seen.append(dict(msg.headers or {}))
            await msg.respond(b"{}")

        await handler.subscribe(f"{names}.svc", cb=answer)
        await registered(handler)
        await handler.jetstream().add_stream(name=stream, subjects=[f"{names}.js"])
        try:
            requested = await NatsExecutor().run(
                _traced(execution({"subject": f"{names}.svc", "url": nats_url}), trace)
            )
            task_id = uuid4()
            published = await NatsExecutor().run(
                _traced(
                    execution(
                        {"subject": f"{names}.js", "url": nats_url, "mode": "jetstream"},
                        task_id=task_id,
                    ),
                    trace,
                )
            )
            stored = await handler.jetstream().get_msg(stream, 1)
        finally:
            await delete_stream(nats_url, stream)

    assert isinstance(requested, Success) and isinstance(published, Success)
    assert seen[0]["traceparent"] == TRACEPARENT and seen[0]["tracestate"] == "v=1"
    assert stored.headers is not None
    assert stored.headers["traceparent"] == TRACEPARENT
    assert stored.headers["Nats-Msg-Id"] == str(task_id)


def _traced(run: Execution, trace: dict[str, str]) -> Execution:
    return replace(run, trace=trace)
