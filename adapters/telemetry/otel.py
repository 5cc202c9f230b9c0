"""The OpenTelemetry SDK wired for the ledger: a tracer provider exporting OTLP (batched)
over HTTP (protobuf) or gRPC, and the ledger's spans. Imported only when telemetry is
configured (``context.start_telemetry``); needs the ``otel`` extra (``opentelemetry-sdk``,
``opentelemetry-exporter-otlp-proto-http``, and ``-grpc`` for gRPC, imported only then).

Spans, all with ``ledger.*`` attributes:

- ``ledger.enqueue`` (SERVER for HTTP, CONSUMER for NATS, INTERNAL for the CLI, cron and
  the Python API): one enqueue call, a child of the incoming ``traceparent`` (or a new
  root);
- ``ledger.claim`` (INTERNAL): the worker round that started an attempt, one per attempt,
  a child of the context its task was enqueued in;
- ``ledger.run`` (INTERNAL): one attempt, a child of that context, with the span id
  ``attempt_span_id(task, attempt)`` (what the attempt's adapter and children were given);
  a task stored with no context runs in a trace of its own, whose id is the task id;
- ``ledger.record`` (INTERNAL): the round that recorded an attempt's outcome, a child of
  its ``ledger.run``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any
from uuid import UUID

from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import AttemptOutcome, ClaimedAttempt, Failure
from execution_ledger.domain.task import Task
from execution_ledger.domain.trace_context import TraceContext, attempt_span_id, from_fields

try:
    from opentelemetry import trace as trace_api
    from opentelemetry.context import Context
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
except ImportError as missing:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        f"telemetry is configured but OpenTelemetry is not installed ({missing.name}): "
        "pip install 'execution-ledger[otel]'",
        ("telemetry",),
    ) from None

from execution_ledger.adapters.telemetry.context import (
    EnqueueTrace,
    enqueue_closed,
    enqueue_opened,
)
from execution_ledger.adapters.telemetry.settings import GRPC, TelemetrySettings

log = logging.getLogger(__name__)
TRACER_NAME = "execution-ledger"
MAX_REMEMBERED = 10_000  # attempts ran whose ``ledger.record`` is still to come
_KINDS = {"http": trace_api.SpanKind.SERVER, "nats": trace_api.SpanKind.CONSUMER}


class AttemptIds(RandomIdGenerator):
    """Random ids, except for a span whose ids the ledger chose (``chosen``): an attempt's
    span id is derived from its task and number, so that every node agrees on it."""

    def __init__(self) -> None:
        self._chosen = threading.local()

    @contextmanager
    def chosen(self, span_id: str, trace_id: str | None = None) -> Iterator[None]:
        self._chosen.ids = (int(span_id, 16), int(trace_id, 16) if trace_id else None)
        try:
            yield
        finally:
            self._chosen.ids = None

    def generate_span_id(self) -> int:
        ids = getattr(self._chosen, "ids", None)
        return ids[0] if ids else super().generate_span_id()

    def generate_trace_id(self) -> int:
        ids = getattr(self._chosen, "ids", None)
        return ids[1] if ids and ids[1] is not None else super().generate_trace_id()


def parent_context(incoming: TraceContext | None) -> Context:
    """The context a span is started in: the remote parent, or none at all (a root: not
    whatever span happens to be current)."""
    if incoming is None:
        return Context()
    state = trace_api.TraceState.from_header([incoming.state]) if incoming.state else None
    parent = trace_api.SpanContext(
        int(incoming.trace_id, 16),
        int(incoming.span_id, 16),
        is_remote=True,
        trace_flags=trace_api.TraceFlags(incoming.flags & 0xFF),
        trace_state=state,
    )
    return trace_api.set_span_in_context(trace_api.NonRecordingSpan(parent), Context())


def fields_of(span: trace_api.Span) -> dict[str, str]:
    """A span's own context as carrier values."""
    own = span.get_span_context()
    state = own.trace_state.to_header() if own.trace_state else None
    context = TraceContext(
        f"{own.trace_id:032x}", f"{own.span_id:016x}", int(own.trace_flags), state or None
    )
    return context.fields()


class OtelTelemetry:
    """The process's tracer provider and the ledger's spans (``context.Telemetry``)."""

    def __init__(self, provider: TracerProvider, ids: AttemptIds) -> None:
        self.provider = provider
        self.ids = ids
        self.tracer = provider.get_tracer(TRACER_NAME)

    @classmethod
    def start(cls, settings: TelemetrySettings) -> OtelTelemetry:
        ids = AttemptIds()
        provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
            id_generator=ids,
            shutdown_on_exit=True,  # flushes what is batched when the process exits
        )
        provider.add_span_processor(
            BatchSpanProcessor(span_exporter(settings), schedule_delay_millis=1000)
        )
        log.info(
            "traces exported to %s (%s) as %s",
            settings.traces_url,
            settings.protocol,
            settings.service_name,
        )
        return cls(provider, ids)

    def enqueue(self, incoming: TraceContext | None, source: str, name: str) -> EnqueueTrace:
        span = self.tracer.start_span(
            "ledger.enqueue",
            context=parent_context(incoming),
            kind=_KINDS.get(source, trace_api.SpanKind.INTERNAL),
            attributes={"ledger.source": source, "ledger.entry": name},
        )
        return SpanEnqueueTrace(span)

    def attempt_tracing(self, worker_id: str) -> WorkerSpans:
        return WorkerSpans(self, worker_id)

    def shutdown(self) -> None:
        self.provider.shutdown()


def span_exporter(settings: TelemetrySettings) -> SpanExporter:
    """OTLP over HTTP, or over gRPC (its exporter imported only then). With no headers in
    the file, either exporter reads ``OTEL_EXPORTER_OTLP_HEADERS`` itself."""
    headers = dict(settings.headers) or None
    if settings.protocol != GRPC:
        return HttpSpanExporter(endpoint=settings.traces_url, headers=headers)
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )
    except ImportError as missing:  # pragma: no cover - depends on the installed extras
        raise ConfigError(
            f"traces over gRPC need opentelemetry-exporter-otlp-proto-grpc ({missing.name} "
            "is not installed): pip install 'execution-ledger[otel]'",
            ("telemetry", "protocol"),
        ) from None
    # gRPC metadata keys are lower-case; an http:// address is a plain-text channel.
    metadata = {k.lower(): v for k, v in headers.items()} if headers else None
    return GrpcSpanExporter(endpoint=settings.traces_url, headers=metadata)


class SpanEnqueueTrace(EnqueueTrace):
    """``ledger.enqueue``: the tasks store this span's context; ended on leaving. While
    it is open, an enqueue through the ``Ledger`` in the same context joins it
    (``context.ledger_enqueue_trace``) instead of starting a span of its own."""

    __slots__ = ("opened", "span")

    def __init__(self, span: trace_api.Span) -> None:
        super().__init__(fields_of(span))
        self.span = span
        self.opened: Any = None

    def __enter__(self) -> SpanEnqueueTrace:
        self.opened = enqueue_opened(self)
        return self

    def enqueued(self, tasks: Sequence[Task], created: bool = True) -> None:
        if not tasks:
            return
        self.span.set_attributes(
            {
                "ledger.task_id": str(tasks[0].id),
                "ledger.task_type": tasks[0].type_name,
                "ledger.task_count": len(tasks),
                "ledger.created": created,
            }
        )

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.opened is not None:
            enqueue_closed(self.opened)
            self.opened = None
        if error is not None:
            self.span.record_exception(error)
            self.span.set_status(trace_api.Status(trace_api.StatusCode.ERROR, str(error)))
        self.span.end()


class WorkerSpans:
    """A worker's ``ledger.claim``, ``ledger.run`` and ``ledger.record`` spans
    (``processors.attempt_tracing.AttemptTracing``)."""

    def __init__(self, telemetry: OtelTelemetry, worker_id: str) -> None:
        self.tracer = telemetry.tracer
        self.ids = telemetry.ids
        self.worker_id = worker_id
        # Attempts that ran here and whose outcome is not recorded yet: their run span's
        # context, the parent of their ``ledger.record``.
        self.ran: dict[tuple[UUID, int], Context] = {}

    def run(self, attempt: ClaimedAttempt) -> RunSpan:
        stored = from_fields(attempt.trace)
        own = attempt_span_id(attempt.task_id, attempt.attempt)
        with self.ids.chosen(own, None if stored else attempt.task_id.hex):
            span = self.tracer.start_span(
                "ledger.run",
                context=parent_context(stored),
                attributes=_attempt_attributes(attempt) | {"ledger.worker": self.worker_id},
            )
        return RunSpan(self, attempt, span)

    def round(
        self,
        began_ns: int,
        claimed: Sequence[ClaimedAttempt],
        outcomes: Sequence[AttemptOutcome],
    ) -> None:
        """The round's spans, once it is over (its start and end times as they were)."""
        ended = time.time_ns()
        size = {"ledger.round.claimed": len(claimed), "ledger.round.recorded": len(outcomes)}
        for attempt in claimed:
            stored = from_fields(attempt.trace)
            parent = parent_context(stored) if stored else self._own_root(attempt)
            attributes = _attempt_attributes(attempt) | size | {"ledger.worker": self.worker_id}
            self._span("ledger.claim", parent, attributes, began_ns, ended)
        for outcome in outcomes:
            ran = self.ran.pop((outcome.task_id, outcome.attempt), None)
            if ran is not None:
                attributes = {
                    "ledger.task_id": str(outcome.task_id),
                    "ledger.attempt": outcome.attempt,
                    "ledger.outcome": outcome_name(outcome),
                    "ledger.worker": self.worker_id,
                } | size
                self._span("ledger.record", ran, attributes, began_ns, ended)

    def remember(self, attempt: ClaimedAttempt, span: trace_api.Span) -> None:
        """An attempt whose outcome waits for a round (bounded: an outcome recorded apart,
        after a failed round, has no ``ledger.record`` and is forgotten in time)."""
        if len(self.ran) >= MAX_REMEMBERED:
            del self.ran[next(iter(self.ran))]
        self.ran[(attempt.task_id, attempt.attempt)] = trace_api.set_span_in_context(
            span, Context()
        )

    def _own_root(self, attempt: ClaimedAttempt) -> Context:
        """The run span of an attempt of a task stored with no context (a root)."""
        return parent_context(
            TraceContext(attempt.task_id.hex, attempt_span_id(attempt.task_id, attempt.attempt))
        )

    def _span(
        self, name: str, parent: Context, attributes: dict[str, Any], began: int, ended: int
    ) -> None:
        span = self.tracer.start_span(name, context=parent, attributes=attributes, start_time=began)
        span.end(end_time=ended)


class RunSpan:
    """``ledger.run`` of one attempt (``processors.attempt_tracing.RunSpan``)."""

    __slots__ = ("attempt", "span", "spans", "trace")

    def __init__(self, spans: WorkerSpans, attempt: ClaimedAttempt, span: trace_api.Span):
        self.spans = spans
        self.attempt = attempt
        self.span = span
        self.trace: Mapping[str, str] | None = fields_of(span)

    def end(self, outcome: AttemptOutcome | None) -> None:
        name = outcome_name(outcome)
        self.span.set_attribute("ledger.outcome", name)
        result = outcome.result if outcome is not None else None
        if isinstance(result, Failure):
            self.span.set_attribute("ledger.error_class", result.error_class)
        if name != "succeeded":
            self.span.set_status(trace_api.Status(trace_api.StatusCode.ERROR, name))
        self.span.end()
        if outcome is not None:
            self.spans.remember(self.attempt, self.span)


def outcome_name(outcome: AttemptOutcome | None) -> str:
    if outcome is None:
        return "stopped"  # cancelled, or timed out by the watchdog: recorded there
    if outcome.timed_out:
        return "timed_out"
    if isinstance(outcome.result, Failure):
        return "failed"
    return "succeeded"


def _attempt_attributes(attempt: ClaimedAttempt) -> dict[str, Any]:
    return {
        "ledger.task_id": str(attempt.task_id),
        "ledger.task_type": attempt.type_name,
        "ledger.attempt": attempt.attempt,
        "ledger.adapter": attempt.adapter,
        "ledger.queue": attempt.queue,
    }
