"""The trace context at the ways in, and this process's telemetry switch.

``enqueue_trace(headers, source)`` is what HTTP and NATS call around an enqueue: with
telemetry off it costs a header look-up, and a ``traceparent`` that parses is stored with
the tasks as it came (so the attempts still continue the caller's trace downstream); with
telemetry on it is the ``ledger.enqueue`` span, a child of the incoming context (or a new
root: an invalid ``traceparent`` is ignored, never an error), and the tasks store the
span's own context, so their runs are its children.

Every way in has its ``ledger.enqueue`` span: HTTP and NATS open it themselves
(``enqueue_trace``), as do ``ledger enqueue`` (``cli_enqueue_trace``) and each cron tick
(``tick_trace``); the ``Ledger``'s enqueue methods (the Python API) call
``ledger_enqueue_trace``, which joins the span a way in has open in the same context (a
context variable, carried into the database thread) or else opens one of its own.

``start_telemetry`` (``ledger serve`` / ``ledger worker``, before the node is built) turns
telemetry on when the configuration names an endpoint; only then is the OpenTelemetry SDK
imported (``otel.py``). Nothing here imports it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import Task
from execution_ledger.domain.trace_context import (
    TRACEPARENT,
    TRACESTATE,
    TraceContext,
    from_fields,
    parse,
)

if TYPE_CHECKING:
    from execution_ledger.adapters.config_file import LoadedConfig
    from execution_ledger.processors.attempt_tracing import AttemptTracing


class EnqueueTrace:
    """The trace of one enqueue. This base is the one for telemetry off: it only passes
    the incoming context (``fields``, or None) on to the tasks."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, str] | None) -> None:
        self.fields = fields

    def carry(self, request: TaskRequest) -> TaskRequest:
        """The request with the context to store (the same request when there is none)."""
        return request if self.fields is None else replace(request, trace=self.fields)

    def carry_all(self, requests: Sequence[TaskRequest]) -> Sequence[TaskRequest]:
        if self.fields is None:
            return requests
        return [replace(request, trace=self.fields) for request in requests]

    def enqueued(self, tasks: Sequence[Task], created: bool = True) -> None:
        """What the enqueue stored (span attributes)."""

    def __enter__(self) -> EnqueueTrace:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None


NO_TRACE = EnqueueTrace(None)


class _Joined(EnqueueTrace):
    """An enqueue through the ``Ledger`` inside a way in's open span: its tasks store that
    span's context and it records them; the span stays open (its way in ends it)."""

    __slots__ = ("outer",)

    def __init__(self, outer: EnqueueTrace) -> None:
        super().__init__(outer.fields)
        self.outer = outer

    def enqueued(self, tasks: Sequence[Task], created: bool = True) -> None:
        self.outer.enqueued(tasks, created)


# The ``ledger.enqueue`` span open in this context (telemetry on only).
_open: ContextVar[EnqueueTrace | None] = ContextVar("ledger_enqueue_span", default=None)


def enqueue_opened(trace: EnqueueTrace) -> Token[EnqueueTrace | None]:
    """Mark ``trace`` as the enqueue span open in this context (until ``enqueue_closed``)."""
    return _open.set(trace)


def enqueue_closed(token: Token[EnqueueTrace | None]) -> None:
    _open.reset(token)


class Telemetry(Protocol):
    """What ``otel.py`` provides once started."""

    def enqueue(self, incoming: TraceContext | None, source: str, name: str) -> EnqueueTrace: ...

    def attempt_tracing(self, worker_id: str) -> AttemptTracing: ...

    def shutdown(self) -> None: ...


_active: Telemetry | None = None  # this process's, when started


def enqueue_trace(headers: Mapping[str, str] | None, source: str, name: str = "") -> EnqueueTrace:
    """The trace of an enqueue from ``source`` (``http``, ``nats``; ``name``: the route or
    subject) whose carrier's headers are ``headers``."""
    traceparent = headers.get(TRACEPARENT) if headers else None
    telemetry = _active
    if telemetry is None:
        if traceparent is None:
            return NO_TRACE
        incoming = parse(traceparent, headers.get(TRACESTATE) if headers else None)
        return NO_TRACE if incoming is None else EnqueueTrace(incoming.fields())
    incoming = parse(traceparent, headers.get(TRACESTATE)) if headers and traceparent else None
    return telemetry.enqueue(incoming, source, name)


def ledger_enqueue_trace(requests: Sequence[TaskRequest], name: str) -> EnqueueTrace:
    """The trace of an enqueue through the ``Ledger`` (``name``: its method): with
    telemetry off none (a request's own ``trace`` is stored as it is); inside a way in's
    open span, that span; else a ``ledger.enqueue`` span of source ``python``, a child of
    the first request's own ``trace`` when it has one."""
    telemetry = _active
    if telemetry is None:
        return NO_TRACE
    outer = _open.get()
    if outer is not None:
        return _Joined(outer)
    own = next((r.trace for r in requests if r.trace), None)
    return telemetry.enqueue(from_fields(own), "python", name)


def tick_trace(schedule: str) -> EnqueueTrace:
    """The span of one cron tick's enqueue (``processors/cron.py``), named by its schedule."""
    return enqueue_trace(None, "cron", schedule)


@contextmanager
def cli_enqueue_trace(
    config: LoadedConfig, command: str, environ: Mapping[str, str] | None = None
) -> Iterator[EnqueueTrace]:
    """The trace of a ``ledger`` command that enqueues: telemetry started for it when
    configured (and stopped when it ends, which exports its span), and the caller's
    context from ``TRACEPARENT`` / ``TRACESTATE`` in the environment (what a ``shell``
    task's command gets), as a ``traceparent`` header is read."""
    env = os.environ if environ is None else environ
    started = _active is None and start_telemetry(config, env)
    headers = {
        header: env[variable]
        for header, variable in ((TRACEPARENT, "TRACEPARENT"), (TRACESTATE, "TRACESTATE"))
        if env.get(variable)
    }
    try:
        with enqueue_trace(headers, "cli", command) as trace:
            yield trace
    finally:
        if started:
            stop_telemetry()


def attempt_tracing(worker_id: str) -> AttemptTracing | None:
    """The worker's spans, or None with telemetry off."""
    return _active.attempt_tracing(worker_id) if _active is not None else None


def start_telemetry(config: LoadedConfig, environ: Mapping[str, str] | None = None) -> bool:
    """Turn telemetry on for this process if the file or the environment names an
    endpoint; True if it is on. Refuses (``ConfigError``) when the SDK is not installed."""
    from execution_ledger.adapters.telemetry.settings import telemetry_settings

    settings = telemetry_settings(config.telemetry, environ)
    if settings is None:
        return _active is not None
    from execution_ledger.adapters.telemetry.otel import OtelTelemetry

    use(OtelTelemetry.start(settings))
    return True


def use(telemetry: Telemetry | None) -> None:
    """Install ``telemetry`` for this process (None: off), shutting down the one before."""
    global _active
    previous, _active = _active, telemetry
    if previous is not None and previous is not telemetry:
        previous.shutdown()


def stop_telemetry() -> None:
    """Flush what was not exported yet and turn telemetry off."""
    use(None)


def active() -> Telemetry | None:
    return _active
