"""Every way in makes one ``ledger.enqueue`` span (exported as real OTLP to an in-process
collector), and its tasks store that span's context: the Python API (``Ledger.enqueue``,
``enqueue_graph``, ``enqueue_in``), ``ledger enqueue`` on the command line (with the
caller's ``TRACEPARENT``), a cron tick, and HTTP without a second span from the ``Ledger``
it calls. (NATS: ``tests/adapters/nats/test_ingress_traces.py``.)"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from execution_ledger.adapters.cli.main import main
from execution_ledger.adapters.config_file import DEFAULT_REGISTRY
from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.adapters.telemetry.context import active, start_telemetry, stop_telemetry
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.trace_context import from_fields
from tests.adapters.http.live_server import LiveServer, runtime_with_file
from tests.adapters.telemetry.otlp_collector import CollectedSpan, Collector, running_collector

TRACE = "6bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "20f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{CALLER_SPAN}-01"
INTERNAL = 1  # OTLP span kind
SCHEDULES = textwrap.dedent(
    """
    [schedules.every_minute]
    cron = "* * * * *"
    task_type = "echo"

    [schedules.one_at_a_time]
    cron = "* * * * *"
    task_type = "echo"
    overlap = "skip"
    """
)
T0 = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
def collector() -> Iterator[Collector]:
    with running_collector() as collector:
        yield collector


@pytest.fixture
def traced(ledger_env: None, tmp_path: Path, collector: Collector) -> Iterator[Runtime]:
    text = DEFAULT_REGISTRY.read_text() + SCHEDULES
    text += f'\n[telemetry]\nendpoint = "{collector.url}"\n'
    with runtime_with_file(tmp_path, text) as runtime:
        assert start_telemetry(runtime.settings.config, environ={})
        try:
            yield runtime
        finally:
            stop_telemetry()


def flush() -> None:
    telemetry = active()
    if telemetry is not None:
        telemetry.provider.force_flush()  # type: ignore[attr-defined]


def enqueue_spans(collector: Collector, count: int) -> list[CollectedSpan]:
    """The ``ledger.enqueue`` spans, once there are ``count`` of them."""
    spans = collector.wait_for(
        lambda spans: sum(s.name == "ledger.enqueue" for s in spans) >= count, flush
    )
    found = [s for s in spans if s.name == "ledger.enqueue"]
    assert len(found) == count, found
    return found


def stored_as(span: CollectedSpan) -> tuple[str, str]:
    """What a task stores of ``span``: its trace and span ids (the flags may carry the
    SDK's random-trace-id bit)."""
    return span.trace_id, span.span_id


def stored(runtime: Runtime, task_id: UUID | str | None) -> tuple[str, str] | None:
    assert task_id is not None
    context = from_fields(runtime.ledger.task(UUID(str(task_id))).trace)
    return None if context is None else (context.trace_id, context.span_id)


def test_a_python_api_enqueue_is_a_root_span_whose_context_the_task_stores(
    traced: Runtime, collector: Collector
) -> None:
    task = traced.ledger.enqueue(TaskRequest("echo", {"n": 1}))
    (span,) = enqueue_spans(collector, 1)
    assert (span.kind, span.parent_span_id) == (INTERNAL, "")
    assert span.attributes["ledger.source"] == "python"
    assert span.attributes["ledger.entry"] == "enqueue"
    assert span.attributes["ledger.task_id"] == str(task.id)
    assert span.attributes["ledger.created"] is True
    assert stored(traced, task.id) == stored_as(span)


def test_a_python_enqueue_with_the_callers_trace_is_its_child(
    traced: Runtime, collector: Collector
) -> None:
    task = traced.ledger.enqueue(TaskRequest("echo", trace={"traceparent": TRACEPARENT}))
    again, created = traced.ledger.enqueue_once(
        TaskRequest("echo", idempotency_key="k", trace={"traceparent": TRACEPARENT})
    )
    holder, created_again = traced.ledger.enqueue_once(TaskRequest("echo", idempotency_key="k"))
    first, keyed, repeated = enqueue_spans(collector, 3)
    assert (first.trace_id, first.parent_span_id) == (TRACE, CALLER_SPAN)
    assert stored(traced, task.id) == stored_as(first)
    assert (created, created_again, holder.id) == (True, False, again.id)
    assert keyed.attributes["ledger.created"] is True
    assert repeated.attributes["ledger.created"] is False  # answered with the key's holder
    assert repeated.attributes["ledger.task_id"] == str(again.id)


def test_a_graph_and_an_enqueue_in_a_transaction_are_one_span_each(
    traced: Runtime, collector: Collector
) -> None:
    graph = traced.ledger.enqueue_graph(
        [TaskRequest("echo", ref="a"), TaskRequest("echo", ref="b", depends_on=("a",))]
    )
    with psycopg.connect(traced.database_url) as conn:
        conn.execute("SELECT 1")
        [inside] = traced.ledger.enqueue_in(conn, [TaskRequest("echo")])
        conn.commit()
    spans = {s.attributes["ledger.entry"]: s for s in enqueue_spans(collector, 2)}
    assert spans["enqueue_graph"].attributes["ledger.task_count"] == 2
    for task in graph:
        assert stored(traced, task.id) == stored_as(spans["enqueue_graph"])
    assert stored(traced, inside.id) == stored_as(spans["enqueue_in"])


def test_an_http_enqueue_is_one_span_the_ledger_it_calls_adds_none(
    traced: Runtime, collector: Collector
) -> None:
    with LiveServer(traced) as live, live.client() as client:
        plain = client.post("/v1/tasks", json={"type": "echo"})
        keyed = client.post("/v1/tasks", json={"type": "echo", "idempotency_key": "h"})
        graph = client.post("/v1/graphs", json={"tasks": [{"ref": "a", "type": "echo"}]})
    assert [r.status_code for r in (plain, keyed, graph)] == [201, 201, 201]
    spans = enqueue_spans(collector, 3)
    assert {s.attributes["ledger.source"] for s in spans} == {"http"}
    by_task = {s.attributes["ledger.task_id"]: s for s in spans}
    for task_id in (plain.json()["id"], keyed.json()["id"]):
        assert stored(traced, task_id) == stored_as(by_task[task_id])


def test_each_cron_tick_is_a_span_named_by_its_schedule(
    traced: Runtime, collector: Collector
) -> None:
    node = WorkerNode(traced, projections=False)
    try:
        node.scheduler.clock = lambda: T0
        node.scheduler.run_once()  # first sight: nothing fired
        node.scheduler.clock = lambda: T0 + timedelta(minutes=1)
        fired = {f.schedule: f for f in node.scheduler.run_once()}
    finally:
        node.pool.shutdown()
    spans = {s.attributes["ledger.entry"]: s for s in enqueue_spans(collector, 2)}
    assert set(spans) == set(fired) == {"every_minute", "one_at_a_time"}
    for name, span in spans.items():
        assert span.attributes["ledger.source"] == "cron"
        assert span.attributes["ledger.task_id"] == str(fired[name].task_id)
        assert stored(traced, fired[name].task_id) == stored_as(span)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_ledger_enqueue_on_the_command_line_is_a_child_of_its_traceparent(
    ledger_env: None,
    collector: Collector,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
    task_id = run_cli(capsys, "enqueue", "echo", "-a", "n=1").split()[0]
    # The command started telemetry for itself, and stopping it exported the span.
    assert active() is None
    (span,) = enqueue_spans(collector, 1)
    assert (span.trace_id, span.parent_span_id) == (TRACE, CALLER_SPAN)
    assert span.attributes["ledger.source"] == "cli"
    assert span.attributes["ledger.entry"] == "ledger enqueue"
    assert span.attributes["ledger.task_id"] == task_id
    monkeypatch.delenv("TRACEPARENT")
    graph = tmp_path / "dag.json"
    graph.write_text(json.dumps({"tasks": [{"ref": "a", "type": "echo"}]}))
    run_cli(capsys, "enqueue", "--graph", str(graph))
    _, root = enqueue_spans(collector, 2)
    assert root.parent_span_id == "" and root.attributes["ledger.task_count"] == 1
    runtime = open_runtime(pool_size=1)
    try:
        assert stored(runtime, task_id) == stored_as(span)
    finally:
        runtime.close()


def test_with_telemetry_off_the_command_line_stores_its_traceparent_as_it_came(
    ledger_env: None,
    collector: Collector,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    runtime: Runtime,
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
    monkeypatch.setenv("TRACESTATE", "vendor=1")
    task_id = run_cli(capsys, "enqueue", "echo").split()[0]
    monkeypatch.setenv("TRACEPARENT", "00-not-a-context")
    other = run_cli(capsys, "enqueue", "echo").split()[0]
    assert runtime.ledger.task(UUID(task_id)).trace == {
        "traceparent": TRACEPARENT,
        "tracestate": "vendor=1",
    }
    assert runtime.ledger.task(UUID(other)).trace is None  # an invalid one is ignored
    assert active() is None and collector.exports == 0
