"""W3C trace context (``traceparent``, ``tracestate``): parsing a carrier's values, and the
context an attempt continues. Pure: no OpenTelemetry here (``adapters/telemetry/`` wires
the SDK, when configured).

A task stores the context of the request that enqueued it (``TaskEnqueued.trace``: the
``traceparent`` and, if any, ``tracestate`` text). Each attempt continues that trace under a
span id of its own, derived from the task id and the attempt number
(``attempt_span_id``): the worker's ``ledger.run`` span has that id when telemetry is on,
and the executors (an outgoing HTTP request's ``traceparent``, NATS headers, a command's
``TRACEPARENT``) and the children the attempt spawns are given it whether or not it is, so
a trace stays whole across nodes and restarts without the span being kept anywhere.

An invalid ``traceparent`` is no context at all (the request starts a new trace); it is
never an error.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MAX_TRACESTATE = 512  # characters: W3C asks carriers to keep at least this much
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
SAMPLED = 0x01


@dataclass(frozen=True)
class TraceContext:
    """One span's context as W3C carries it: 32 and 16 lower-case hex digits, the flags
    (bit 0: sampled) and the vendors' ``tracestate`` text."""

    trace_id: str
    span_id: str
    flags: int = SAMPLED
    state: str | None = None

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    def fields(self) -> dict[str, str]:
        """The carrier's values: ``traceparent``, and ``tracestate`` when there is one."""
        if self.state:
            return {TRACEPARENT: self.traceparent, TRACESTATE: self.state}
        return {TRACEPARENT: self.traceparent}


def parse(traceparent: object, tracestate: object = None) -> TraceContext | None:
    """The context a ``traceparent`` value names, or None when it is missing or invalid
    (wrong shape, upper-case hex, version ``ff``, an all-zero id). A ``tracestate`` that is
    too long or holds a control character is dropped; the ``traceparent`` still counts."""
    if not isinstance(traceparent, str):
        return None
    text = traceparent.strip()
    match = _TRACEPARENT.match(text)
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    rest = text[match.end() :]
    # Version 00 is exactly these four fields; a later version may append more after "-".
    if (version == "00" and rest) or (rest and not rest.startswith("-")):
        return None
    return TraceContext(trace_id, span_id, int(flags, 16), _state(tracestate))


def _state(tracestate: object) -> str | None:
    if not isinstance(tracestate, str):
        return None
    text = tracestate.strip()
    if not text or len(text) > MAX_TRACESTATE:
        return None
    if any(not " " <= char <= "~" for char in text):
        return None
    return text


def from_fields(fields: Mapping[str, str] | None) -> TraceContext | None:
    """The context stored with a task (``TaskEnqueued.trace``), or None."""
    if not fields:
        return None
    return parse(fields.get(TRACEPARENT), fields.get(TRACESTATE))


def attempt_span_id(task_id: UUID, attempt: int) -> str:
    """The span id of an attempt: the same on every node, never all zeros."""
    digest = hashlib.blake2b(
        task_id.bytes + attempt.to_bytes(4, "big"), digest_size=8, person=b"ledger.run"
    ).hexdigest()
    return digest if digest != _ZERO_SPAN else "0" * 15 + "1"


def attempt_context(
    stored: Mapping[str, str] | None, task_id: UUID, attempt: int
) -> TraceContext | None:
    """The context an attempt continues its task's trace in (its own span id), or None
    for a task stored without one."""
    context = from_fields(stored)
    if context is None:
        return None
    return TraceContext(
        context.trace_id, attempt_span_id(task_id, attempt), context.flags, context.state
    )


def task_root(task_id: UUID, attempt: int) -> TraceContext:
    """The context of an attempt of a task stored without one, when telemetry is on: a
    trace of its own whose id is the task id."""
    return TraceContext(task_id.hex, attempt_span_id(task_id, attempt))


def attempt_fields(
    stored: Mapping[str, str] | None, task_id: UUID, attempt: int
) -> dict[str, str] | None:
    """``attempt_context`` as carrier values (what children store, executors send)."""
    context = attempt_context(stored, task_id, attempt)
    return context.fields() if context is not None else None


def with_headers(headers: Mapping[str, str], trace: Mapping[str, str] | None) -> dict[str, str]:
    """``headers`` plus the trace context's, unless they name one already (any case)."""
    merged = dict(headers)
    if trace:
        named = {name.lower() for name in headers}
        merged.update((k, v) for k, v in trace.items() if k not in named)
    return merged


def environment(trace: Mapping[str, str] | None) -> dict[str, str]:
    """The trace context as a command's environment: ``TRACEPARENT``, ``TRACESTATE``."""
    if not trace:
        return {}
    return {name.upper(): value for name, value in trace.items()}
