"""The W3C trace context: what a ``traceparent`` may be (an invalid one is no context, never
an error), the context an attempt continues in, and how it reaches the task's children,
its HTTP headers and a command's environment."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from execution_ledger.adapters.config_file import DEFAULT_REGISTRY, parse_config
from execution_ledger.domain.children import plan_children
from execution_ledger.domain.execution import Spawn
from execution_ledger.domain.submission import Requester, SubmissionContext, TaskRequest, plan_tasks
from execution_ledger.domain.task import Task
from execution_ledger.domain.trace_context import (
    TraceContext,
    attempt_context,
    attempt_span_id,
    environment,
    parse,
    with_headers,
)
from tests.domain.test_workflow_rules import stored_enqueue

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
REGISTRY = parse_config(DEFAULT_REGISTRY.read_text(), "<test>").registry


def test_a_valid_traceparent_and_its_tracestate_are_read() -> None:
    context = parse(f"00-{TRACE}-{SPAN}-01", " rojo=00f067aa0ba902b7,congo=t61rcWkgMzE ")
    assert context == TraceContext(TRACE, SPAN, 1, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    assert context.sampled and context.traceparent == f"00-{TRACE}-{SPAN}-01"
    assert parse(f"00-{TRACE}-{SPAN}-00") == TraceContext(TRACE, SPAN, 0, None)
    # A later version may carry more fields after the four it shares with version 00.
    assert parse(f"01-{TRACE}-{SPAN}-01-more") == TraceContext(TRACE, SPAN, 1, None)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper-case hex
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE[:-1]}-{SPAN}-01",  # too short
        f"00-{TRACE}-{SPAN}-1",
        ["not", "text"],
    ],
)
def test_an_invalid_traceparent_is_no_context(value: Any) -> None:
    assert parse(value, "vendor=1") is None


def test_a_tracestate_too_long_or_with_a_control_character_is_dropped_not_the_parent() -> None:
    assert parse(f"00-{TRACE}-{SPAN}-01", "a=1\r\nX-Injected: yes") == TraceContext(TRACE, SPAN)
    assert parse(f"00-{TRACE}-{SPAN}-01", "a=" + "x" * 600) == TraceContext(TRACE, SPAN)


def test_an_attempt_continues_its_task_trace_under_a_span_id_of_its_own() -> None:
    task_id = uuid4()
    stored = {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "v=1"}
    first, second = attempt_context(stored, task_id, 1), attempt_context(stored, task_id, 2)
    assert first is not None and second is not None
    assert (first.trace_id, first.flags, first.state) == (TRACE, 1, "v=1")
    assert first.span_id == attempt_span_id(task_id, 1) != second.span_id
    assert first.span_id not in (SPAN, "0" * 16) and len(first.span_id) == 16
    assert attempt_span_id(task_id, 1) == attempt_span_id(UUID(str(task_id)), 1)
    assert attempt_context(None, task_id, 1) is None


def test_children_spawned_at_run_time_carry_the_parent_attempts_context() -> None:
    parent = _started_parent({"traceparent": f"00-{TRACE}-{SPAN}-01"})
    children = plan_children(
        REGISTRY, parent, Spawn(({"type": "echo"}, {"type": "echo"})), NOW, uuid4
    )
    own = f"00-{TRACE}-{attempt_span_id(parent.id, 1)}-01"
    assert [child.trace for child in children] == [{"traceparent": own}] * 2

    untraced = _started_parent(None)
    (child,) = plan_children(REGISTRY, untraced, Spawn(({"type": "echo"},)), NOW, uuid4)
    assert child.trace is None


def test_a_submitted_task_stores_its_requests_context_and_one_without_stores_none() -> None:
    context = SubmissionContext(REGISTRY, Requester("p", "admin"), NOW, uuid4)
    trace = {"traceparent": f"00-{TRACE}-{SPAN}-01"}
    traced, plain = plan_tasks(
        context, [TaskRequest("echo", ref="a", trace=trace), TaskRequest("echo", ref="b")], {}
    )
    assert traced.trace == trace and plain.trace is None
    recorded = traced.collect_events()[0]
    assert recorded.trace == trace  # type: ignore[attr-defined]


def test_an_enqueue_stored_before_the_trace_field_loads_with_none() -> None:
    event = stored_enqueue()
    assert event.trace is None
    task = event.mutate(None)
    assert task is not None and task.trace is None


def test_the_context_goes_into_headers_and_the_environment_unless_they_set_it() -> None:
    trace = {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "v=1"}
    assert with_headers({"accept": "x"}, trace) == {"accept": "x", **trace}
    assert with_headers({"TraceParent": "mine"}, trace) == {
        "TraceParent": "mine",
        "tracestate": "v=1",
    }
    assert with_headers({"a": "b"}, None) == {"a": "b"}
    assert environment(trace) == {"TRACEPARENT": trace["traceparent"], "TRACESTATE": "v=1"}
    assert environment(None) == {}


def _started_parent(trace: dict[str, str] | None) -> Task:
    context = SubmissionContext(REGISTRY, Requester("p", "admin"), NOW, uuid4)
    (parent,) = plan_tasks(context, [TaskRequest("echo", trace=trace)], {})
    parent.start("w", NOW, NOW)
    return parent


def test_a_context_given_through_the_python_api_is_stored_checked_or_not_at_all() -> None:
    context = SubmissionContext(REGISTRY, Requester("p", "admin"), NOW, uuid4)
    given = [
        {"traceparent": f" 00-{TRACE}-{SPAN}-01 ", "tracestate": "v=1", "other": "dropped"},
        {"traceparent": "00-not-a-trace-01"},
        {"tracestate": "v=1"},
        "00-not-a-mapping",
    ]
    tasks = plan_tasks(context, [TaskRequest("echo", trace=t) for t in given], {})  # type: ignore[arg-type]
    assert [task.trace for task in tasks] == [
        {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "v=1"},
        None,
        None,
        None,
    ]
