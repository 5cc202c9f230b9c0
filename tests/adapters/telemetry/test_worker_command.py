"""``ledger worker`` turns traces on from the standard OpenTelemetry variables: a task
enqueued through the Python API with a trace context is run, and its ``ledger.run`` span
reaches the collector under the configured service name, as a child of that context."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from uuid import UUID

import pytest

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.trace_context import attempt_span_id
from tests.adapters.telemetry.otlp_collector import running_collector

TRACE = "5bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "10f067aa0ba902b7"


@pytest.mark.slow
def test_ledger_worker_exports_spans_to_the_endpoint_the_environment_names(
    runtime: Runtime,
) -> None:
    with running_collector() as collector:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_SERVICE_NAME": "worker-under-test",
        }
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "execution_ledger.adapters.cli.main",
                "worker",
                "--no-projections",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            task = runtime.ledger.enqueue(
                TaskRequest("echo", trace={"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01"})
            )
            spans = collector.wait_for(
                lambda spans: any(s.name == "ledger.run" and s.trace_id == TRACE for s in spans),
                flush=lambda: None,  # the worker's own exporter sends every second
                timeout=60,
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=60)

    (run,) = [s for s in spans if s.name == "ledger.run" and s.trace_id == TRACE]
    assert run.parent_span_id == CALLER_SPAN
    assert run.span_id == attempt_span_id(UUID(str(task.id)), 1)
    assert run.service_name == "worker-under-test"
    assert run.attributes["ledger.outcome"] == "succeeded"
    assert worker.returncode == 0, err.decode()
