"""The pure workflow rules: events stored before the workflow fields still load, inputs
resolved from dependencies, the children shape of a result, progress lines, and the
registry's new keys refused when malformed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from execution_ledger.adapters.executors.progress_lines import ProgressLines, parse_progress_line
from execution_ledger.domain.children import spawn_of
from execution_ledger.domain.errors import ConfigError, InvalidSubmission
from execution_ledger.domain.execution import Success
from execution_ledger.domain.inputs import resolve_inputs
from execution_ledger.domain.registry import build_registry
from execution_ledger.domain.task import Task, TaskState

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def stored_enqueue(**missing_fields_dropped: Any) -> Task.TaskEnqueued:
    """A TaskEnqueued as the mapper rebuilds one stored before the workflow fields:
    its ``__dict__`` set from the stored state, which has none of them."""
    state = {
        "originator_id": uuid4(), "originator_version": 1, "timestamp": NOW,
        "originator_topic": "domain.task:Task", "type_name": "echo", "adapter": "python",
        "args": {}, "queue": "default", "priority": 0, "depends_on": [], "run_at": None,
        "lane": None, "idempotency_key": None, "principal": "p", "role": "admin", "tags": [],
        "timeouts": {"start_to_close": 5.0}, "retry": {"max_attempts": 1},
        "initial_state": "ready", "graph_id": None, "ref": None, "adapter_settings": None,
    }  # fmt: skip
    event = object.__new__(Task.TaskEnqueued)
    object.__setattr__(event, "__dict__", state)
    return event


def test_an_enqueue_stored_before_the_workflow_fields_loads_with_their_defaults() -> None:
    event = stored_enqueue()
    # What the projections and the dataset read of the stored event ...
    assert (event.inputs, event.parent_id, event.depth, event.signals) == (None, None, 0, None)
    # ... and the task it rebuilds.
    task = event.mutate(None)
    assert task is not None and task.state is TaskState.READY
    assert (task.inputs, task.parent_id, task.depth, task.awaited_signals) == (None, None, 0, [])


def test_a_heartbeat_stored_without_progress_loads_with_none() -> None:
    task = stored_enqueue().mutate(None)
    assert task is not None
    task.start("w", NOW, NOW)
    beat = object.__new__(Task.TaskHeartbeat)
    object.__setattr__(
        beat,
        "__dict__",
        {
            "originator_id": task.id,
            "originator_version": 3,
            "timestamp": NOW,
            "attempt": 1,
            "lease_expires_at": NOW,
        },
    )
    assert beat.progress is None and beat.message is None
    beat.mutate(task)
    assert task.progress is None


def succeeded(result: Any) -> Task:
    task = stored_enqueue().mutate(None)
    assert task is not None
    task.start("w", NOW, NOW)
    task.succeed(1, result)
    return task


def test_inputs_are_the_results_by_name_or_the_failure_that_ends_the_attempt() -> None:
    done, waiting = succeeded({"n": 1}), stored_enqueue().mutate(None)
    assert waiting is not None
    deps = {done.id: done, waiting.id: waiting}
    assert resolve_inputs({"a": done.id}, deps, 100) == (
        {"a": {"result": {"n": 1}, "task_id": str(done.id)}},
        None,
    )
    _, missing = resolve_inputs({"a": done.id, "b": waiting.id}, deps, 100)
    assert missing is not None and missing.error_class == "InputMissing"
    assert not missing.retryable and "it is ready" in missing.message
    _, unknown = resolve_inputs({"c": uuid4()}, deps, 100)
    assert unknown is not None and unknown.error_class == "InputMissing"
    _, large = resolve_inputs({"a": done.id}, deps, 10)
    assert large is not None and large.error_class == "InputTooLarge" and not large.retryable


def test_the_children_shape_of_a_result_is_read_from_it_or_its_json() -> None:
    child = {"type": "square", "args": {"n": 2}}
    assert spawn_of(Success({"answer": 1})) is None
    assert spawn_of(Success([1, 2])) is None
    plain = spawn_of(Success({"children": [child], "wait": True}))
    assert plain is not None and plain.wait and plain.children == (child,)
    shell = spawn_of(Success({"stdout": "...", "json": {"children": [child]}}))
    assert shell is not None and not shell.wait and shell.on_child_failure == "fail"
    for bad, message in (
        ({"children": "x"}, "children must be an array"),
        ({"children": [child], "wait": "yes"}, "wait must be true or false"),
        ({"children": [child], "on_child_failure": "retry"}, "on_child_failure must be"),
    ):
        with pytest.raises(InvalidSubmission, match=message):
            spawn_of(Success(bad))


def test_progress_lines_are_parsed_and_other_lines_ignored() -> None:
    assert parse_progress_line(b"::progress 0.5 half way") == (0.5, "half way")
    assert parse_progress_line(b"::progress -") == (None, None)
    for line in (b"::progress", b"::progress 1.5", b"::progress x", b"::progressive 0.1"):
        assert parse_progress_line(line) is None
    seen: list[tuple[Any, Any]] = []
    lines = ProgressLines(lambda fraction, message: seen.append((fraction, message)))
    lines.feed(b"hello\n::progress 0.")
    lines.feed(b"25 a quarter\r\nbye\n::progress 1 not ended")
    assert seen == [(0.25, "a quarter")]


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"task_types": {"t": {"adapter": "python", "signals": ["ok", "no way"]}}}, "signals"),
        ({"task_types": {"t": {"adapter": "python", "inputs": "yes"}}}, "inputs"),
        ({"task_types": {"t": {"adapter": "python", "signal_by_other": 1}}}, "signal_by_other"),
        ({"defaults": {"workflows": {"max_children": 0}}}, "max_children"),
        ({"defaults": {"workflows": {"max_kids": 3}}}, "max_kids"),
        ({"roles": {"r": {"signals": "approval"}}}, "signals"),
    ],
)
def test_malformed_workflow_keys_are_refused_with_their_path(
    config: dict[str, Any], where: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        build_registry(config)
    assert where in refused.value.where


def test_a_retried_parent_waits_for_the_children_of_its_new_attempt_only() -> None:
    parent = stored_enqueue().mutate(None)
    assert parent is not None
    first, second, third = uuid4(), uuid4(), uuid4()
    parent.start("w", NOW, NOW)
    parent.spawn_children(1, [first], True, "fail", {"try": 1}, {})
    parent.child_ended(first, TaskState.FAILED, None)
    assert parent.state is TaskState.FAILED and parent.error["class"] == "ChildFailed"
    parent.retry_manually(NOW, by="root")
    parent.start("w", NOW, NOW)
    parent.spawn_children(2, [second, third], True, "fail", {"try": 2}, {})
    parent.child_ended(first, TaskState.SUCCEEDED, {"late": True})  # not this attempt's
    parent.child_ended(second, TaskState.SUCCEEDED, {"n": 2})
    assert parent.state is TaskState.WAITING
    parent.child_ended(third, TaskState.SUCCEEDED, {"n": 3})
    assert parent.state is TaskState.SUCCEEDED
    assert parent.result == {"result": {"try": 2}, "children": [{"n": 2}, {"n": 3}]}
