"""An in-process OTLP collector for the tests: it accepts real protobuf exports on
``POST /v1/traces`` (decoded with ``opentelemetry-proto``) and keeps the spans; and
``/hook``, an endpoint that records the headers of each request it gets (where an http
task's outgoing ``traceparent`` is seen). ``running_grpc_collector`` also serves OTLP over
gRPC (the ``TraceService`` of ``opentelemetry-proto``, on a ``grpcio`` server) at
``grpc_url``, keeping the metadata of each export."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class CollectedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    kind: int
    status_code: int
    attributes: dict[str, Any]
    service_name: str


class Collector:
    def __init__(self) -> None:
        self.spans: list[CollectedSpan] = []
        self.hook_headers: list[dict[str, str]] = []
        self.grpc_metadata: list[dict[str, str]] = []
        self.grpc_url = ""  # served over gRPC too (running_grpc_collector)
        self.exports = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def wait_for(
        self,
        condition: Callable[[list[CollectedSpan]], bool],
        flush: Callable[[], Any],
        timeout: float = 15.0,
    ) -> list[CollectedSpan]:
        """The spans, once ``condition`` holds of them (``flush`` pushes batched spans)."""
        deadline = time.monotonic() + timeout
        while True:
            flush()
            with self._lock:
                spans = list(self.spans)
            if condition(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted((s.name, s.trace_id) for s in spans)
                raise TimeoutError(f"spans not collected in time; have {names}")
            time.sleep(0.05)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/traces":
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    collector._export(body)
                    self._answer(
                        ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
                    )
                else:
                    self._hook()

            def do_GET(self) -> None:
                self._hook()

            def _hook(self) -> None:
                with collector._lock:
                    collector.hook_headers.append({k.lower(): v for k, v in self.headers.items()})
                self._answer(json.dumps({"ok": True}).encode(), "application/json")

            def _answer(self, data: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def _export(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.record(request)

    def record(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        CollectedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            status_code=span.status.code,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            service_name=service,
                        )
                    )
        with self._lock:
            self.exports += 1
            self.spans.extend(spans)


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@contextmanager
def running_collector() -> Iterator[Collector]:
    collector = Collector()
    collector._thread.start()
    try:
        yield collector
    finally:
        collector._server.shutdown()
        collector._server.server_close()


@contextmanager
def running_grpc_collector() -> Iterator[Collector]:
    """The collector, receiving OTLP over gRPC (plain text) at ``grpc_url``."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(
            self, request: ExportTraceServiceRequest, context: Any
        ) -> ExportTraceServiceResponse:
            metadata = {key: value for key, value in context.invocation_metadata()}
            with collector._lock:
                collector.grpc_metadata.append(metadata)
            collector.record(request)
            return ExportTraceServiceResponse()

    with running_collector() as collector:
        server = grpc.server(ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        collector.grpc_url = f"http://127.0.0.1:{port}"
        try:
            yield collector
        finally:
            server.stop(grace=None)
