"""Traces over OTLP/gRPC: with ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` a node exports its real
spans through ``opentelemetry-exporter-otlp-proto-grpc`` to an in-process gRPC collector
(the ``TraceService`` of ``opentelemetry-proto`` on a ``grpcio`` server), with the file's
headers as gRPC metadata; nothing goes to the HTTP endpoint."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from execution_ledger.adapters.config_file import DEFAULT_REGISTRY
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.adapters.telemetry.context import active, start_telemetry, stop_telemetry
from execution_ledger.domain.trace_context import attempt_span_id
from tests.adapters.http.live_server import LiveServer, runtime_with_file
from tests.adapters.telemetry.otlp_collector import Collector, running_grpc_collector

TRACE = "5bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "10f067aa0ba902b7"
SPANS = {"ledger.enqueue", "ledger.claim", "ledger.run", "ledger.record"}


def flush() -> None:
    telemetry = active()
    assert telemetry is not None
    telemetry.provider.force_flush()  # type: ignore[attr-defined]


@pytest.fixture
def collector() -> Iterator[Collector]:
    with running_grpc_collector() as collector:
        yield collector


@pytest.fixture
def grpc_runtime(ledger_env: None, tmp_path: Path, collector: Collector) -> Iterator[Runtime]:
    text = DEFAULT_REGISTRY.read_text() + textwrap.dedent(
        f"""
        [telemetry]
        endpoint = "{collector.grpc_url}"
        service_name = "ledger-grpc"
        headers = {{ "X-Api-Key" = "k-123" }}
        """
    )
    with runtime_with_file(tmp_path, text) as runtime:
        assert start_telemetry(runtime.settings.config, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
        try:
            yield runtime
        finally:
            stop_telemetry()


def test_spans_of_an_enqueue_and_its_attempt_arrive_over_grpc(
    grpc_runtime: Runtime, collector: Collector
) -> None:
    with LiveServer(grpc_runtime, worker=True) as live, live.client() as client:
        answer = client.post(
            "/v1/tasks?wait=20",
            json={"type": "echo", "args": {"n": 1}},
            headers={"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01"},
        )
        assert answer.status_code == 200 and answer.json()["state"] == "succeeded"
        spans = collector.wait_for(
            lambda spans: {s.name for s in spans if s.trace_id == TRACE} >= SPANS, flush
        )
    ours = {s.name: s for s in spans if s.trace_id == TRACE}
    task_id = UUID(answer.json()["id"])
    assert ours["ledger.enqueue"].parent_span_id == CALLER_SPAN
    assert ours["ledger.enqueue"].service_name == "ledger-grpc"
    assert ours["ledger.run"].span_id == attempt_span_id(task_id, 1)
    assert ours["ledger.run"].parent_span_id == ours["ledger.enqueue"].span_id
    assert ours["ledger.record"].parent_span_id == ours["ledger.run"].span_id
    # The file's headers went as (lower-case) gRPC metadata; nothing came over HTTP.
    assert all(m.get("x-api-key") == "k-123" for m in collector.grpc_metadata)
    assert collector.grpc_metadata and collector.exports == len(collector.grpc_metadata)
