"""Traces end to end, exported as real OTLP to an in-process collector: an HTTP enqueue
with a ``traceparent``, the worker's claim, run and record of its attempt, and the
attempt's own HTTP request, all in the caller's trace with the right parents; an invalid
``traceparent`` starts a new trace and is never an error; with telemetry off the stored
context still reaches the attempt's request, and no OpenTelemetry module is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from execution_ledger.adapters.config_file import DEFAULT_REGISTRY
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.adapters.telemetry.context import active, start_telemetry, stop_telemetry
from execution_ledger.domain.trace_context import attempt_span_id, from_fields
from tests.adapters.http.live_server import LiveServer, runtime_with_file
from tests.adapters.telemetry.otlp_collector import CollectedSpan, Collector, running_collector

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{CALLER_SPAN}-01"
SERVER, INTERNAL = 2, 1  # OTLP span kinds
STATUS_ERROR = 2
ROOT = Path(__file__).resolve().parents[3]


def config(collector: Collector, telemetry: bool = True) -> str:
    """The built-in registry, a type whose attempt calls the collector's ``/hook``, and
    (unless ``telemetry`` is off) the collector as the traces' endpoint."""
    text = DEFAULT_REGISTRY.read_text() + textwrap.dedent(
        f"""
        [adapters.http]
        allow_private = true

        [task_types.call_hook]
        adapter = "http"
        settings = {{ url = "{collector.url}/hook", allowed_hosts = ["127.0.0.1"] }}
        retry = {{ max_attempts = 1 }}

        [task_types.fan_out]
        adapter = "python"
        settings = {{ callable = "execution_ledger.adapters.executors.workflow_demo:fan_out" }}
        """
    )
    if telemetry:
        text += f'\n[telemetry]\nendpoint = "{collector.url}"\nservice_name = "ledger-test"\n'
    return text


@pytest.fixture
def collector() -> Iterator[Collector]:
    with running_collector() as collector:
        yield collector


@pytest.fixture
def traced_runtime(ledger_env: None, tmp_path: Path, collector: Collector) -> Iterator[Runtime]:
    with runtime_with_file(tmp_path, config(collector)) as runtime:
        assert start_telemetry(runtime.settings.config, environ={})
        try:
            yield runtime
        finally:
            stop_telemetry()


def flush() -> None:
    telemetry = active()
    assert telemetry is not None
    telemetry.provider.force_flush()  # type: ignore[attr-defined]


def spans_of(trace_id: str, names: set[str], collector: Collector) -> dict[str, CollectedSpan]:
    """The named spans of one trace, once the collector has them all (one of each)."""
    spans = collector.wait_for(
        lambda spans: names <= {s.name for s in spans if s.trace_id == trace_id}, flush
    )
    found = [s for s in spans if s.trace_id == trace_id and s.name in names]
    assert len(found) == len(names), found
    return {s.name: s for s in found}


def test_an_http_enqueue_and_the_attempt_it_causes_are_one_trace_with_parent_links(
    traced_runtime: Runtime, collector: Collector
) -> None:
    with LiveServer(traced_runtime, worker=True) as live, live.client() as client:
        answer = client.post(
            "/v1/tasks?wait=20",
            json={"type": "call_hook"},
            headers={"traceparent": TRACEPARENT, "tracestate": "vendor=7"},
        )
        assert answer.status_code == 200 and answer.json()["state"] == "succeeded"
        task_id = UUID(answer.json()["id"])
        spans = spans_of(
            TRACE, {"ledger.enqueue", "ledger.claim", "ledger.run", "ledger.record"}, collector
        )

    enqueue, run = spans["ledger.enqueue"], spans["ledger.run"]
    assert (enqueue.parent_span_id, enqueue.kind) == (CALLER_SPAN, SERVER)
    assert enqueue.attributes["ledger.source"] == "http"
    assert enqueue.attributes["ledger.task_id"] == str(task_id)
    assert enqueue.service_name == "ledger-test"
    # The attempt runs under the enqueue, with the span id every node derives for it.
    assert (run.parent_span_id, run.span_id) == (enqueue.span_id, attempt_span_id(task_id, 1))
    assert run.attributes["ledger.task_id"] == str(task_id)
    assert run.attributes["ledger.task_type"] == "call_hook"
    assert run.attributes["ledger.attempt"] == 1
    assert run.attributes["ledger.outcome"] == "succeeded"
    assert spans["ledger.claim"].parent_span_id == enqueue.span_id
    assert spans["ledger.claim"].attributes["ledger.task_id"] == str(task_id)
    assert spans["ledger.record"].parent_span_id == run.span_id
    assert spans["ledger.record"].attributes["ledger.outcome"] == "succeeded"
    # The log keeps the enqueue span's context; the attempt's request carries its own.
    assert traced_runtime.ledger.task(task_id).trace == {
        "traceparent": f"00-{TRACE}-{enqueue.span_id}-01",
        "tracestate": "vendor=7",
    }
    (hook,) = collector.hook_headers
    assert hook["traceparent"] == f"00-{TRACE}-{run.span_id}-01"
    assert hook["tracestate"] == "vendor=7"


def test_children_spawned_by_an_attempt_run_under_its_run_span(
    traced_runtime: Runtime, collector: Collector
) -> None:
    with LiveServer(traced_runtime, worker=True) as live, live.client() as client:
        answer = client.post(
            "/v1/tasks?wait=20",
            json={"type": "fan_out", "args": {"numbers": [2, 3]}},
            headers={"traceparent": TRACEPARENT},
        )
        assert answer.json()["state"] == "succeeded"
        spans = collector.wait_for(
            lambda spans: sum(s.name == "ledger.run" and s.trace_id == TRACE for s in spans) == 3,
            flush,
        )
    runs = [s for s in spans if s.name == "ledger.run" and s.trace_id == TRACE]
    (parent,) = [s for s in runs if s.attributes["ledger.task_type"] == "fan_out"]
    children = [s for s in runs if s.attributes["ledger.task_type"] == "square"]
    assert parent.span_id == attempt_span_id(UUID(answer.json()["id"]), 1)
    assert [child.parent_span_id for child in children] == [parent.span_id] * 2
    for child in children:
        stored = traced_runtime.ledger.task(UUID(child.attributes["ledger.task_id"])).trace
        assert stored == {"traceparent": f"00-{TRACE}-{parent.span_id}-01"}


def test_a_failed_attempt_is_a_run_span_with_an_error_status(
    traced_runtime: Runtime, collector: Collector
) -> None:
    with LiveServer(traced_runtime, worker=True) as live, live.client() as client:
        answer = client.post(
            "/v1/tasks?wait=20",
            json={"type": "fail", "args": {"message": "no"}, "max_attempts": 1},
            headers={"traceparent": TRACEPARENT},
        )
        assert answer.json()["state"] == "failed"
        spans = spans_of(TRACE, {"ledger.enqueue", "ledger.run", "ledger.record"}, collector)
    run = spans["ledger.run"]
    assert run.status_code == STATUS_ERROR
    assert (run.attributes["ledger.outcome"], run.attributes["ledger.error_class"]) == (
        "failed",
        "RuntimeError",
    )


def test_an_invalid_traceparent_starts_a_new_trace_and_is_never_an_error(
    traced_runtime: Runtime, collector: Collector
) -> None:
    with LiveServer(traced_runtime) as live, live.client() as client:
        answer = client.post(
            "/v1/tasks",
            json={"type": "echo"},
            headers={"traceparent": f"00-{TRACE.upper()}-{CALLER_SPAN}-01"},
        )
    assert answer.status_code == 201
    task_id = answer.json()["id"]
    stored = from_fields(traced_runtime.ledger.task(UUID(task_id)).trace)
    assert stored is not None and stored.trace_id not in (TRACE, TRACE.upper())
    enqueue = spans_of(stored.trace_id, {"ledger.enqueue"}, collector)["ledger.enqueue"]
    assert enqueue.parent_span_id == ""  # a root
    assert (enqueue.span_id, enqueue.attributes["ledger.task_id"]) == (stored.span_id, task_id)


def test_a_graph_stores_one_enqueue_context_in_every_task(
    traced_runtime: Runtime, collector: Collector
) -> None:
    graph = {
        "tasks": [{"ref": "a", "type": "echo"}, {"ref": "b", "type": "echo", "depends_on": ["a"]}]
    }
    with LiveServer(traced_runtime) as live, live.client() as client:
        answer = client.post("/v1/graphs", json=graph, headers={"traceparent": TRACEPARENT})
    assert answer.status_code == 201
    enqueue = spans_of(TRACE, {"ledger.enqueue"}, collector)["ledger.enqueue"]
    assert enqueue.attributes["ledger.task_count"] == 2
    expected = {"traceparent": f"00-{TRACE}-{enqueue.span_id}-01"}
    for task_id in answer.json()["tasks"].values():
        assert traced_runtime.ledger.task(UUID(task_id)).trace == expected


def test_with_telemetry_off_the_callers_context_still_reaches_the_attempts_request(
    ledger_env: None, tmp_path: Path, collector: Collector
) -> None:
    with runtime_with_file(tmp_path, config(collector, telemetry=False)) as runtime:
        assert not start_telemetry(runtime.settings.config, environ={})
        with LiveServer(runtime, worker=True) as live, live.client() as client:
            answer = client.post(
                "/v1/tasks?wait=20",
                json={"type": "call_hook"},
                headers={"traceparent": TRACEPARENT},
            )
            plain = client.post("/v1/tasks?wait=20", json={"type": "call_hook"})
        assert answer.json()["state"] == plain.json()["state"] == "succeeded"
        task_id = UUID(answer.json()["id"])
        assert runtime.ledger.task(task_id).trace == {"traceparent": TRACEPARENT}  # as it came
        assert runtime.ledger.task(UUID(plain.json()["id"])).trace is None
    traced, untraced = collector.hook_headers
    assert traced["traceparent"] == f"00-{TRACE}-{attempt_span_id(task_id, 1)}-01"
    assert "traceparent" not in untraced
    assert collector.exports == 0  # nothing was exported


OFF_SCRIPT = """
import json, sys
from execution_ledger.adapters.runtime import open_runtime
from execution_ledger.adapters.telemetry.context import start_telemetry
from tests.adapters.http.live_server import LiveServer

runtime = open_runtime(pool_size=2)
on = start_telemetry(runtime.settings.config)
with LiveServer(runtime, worker=True) as live, live.client() as client:
    answer = client.post(
        "/v1/tasks?wait=20", json={"type": "echo", "args": {"n": 1}},
        headers={"traceparent": sys.argv[1]},
    )
runtime.close()
print(json.dumps({
    "on": on,
    "state": answer.json()["state"],
    "modules": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
}))
"""


def test_with_telemetry_off_no_opentelemetry_module_is_imported(ledger_env: None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", OFF_SCRIPT, TRACEPARENT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"on": False, "state": "succeeded", "modules": []}
