"""``enqueued_task`` builds a new task without the library's per-call machinery: the task,
its pending ``TaskEnqueued`` and the event's stored form must be exactly what
``Task(id=..., **fields)`` makes, field by field, for every kind of planned task. And
``task_of_enqueued``, which folds a loaded ``TaskEnqueued`` into its task (a worker's claim),
must give what the library's ``mutate(None)`` gives, for stored events old and new."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)

from execution_ledger.domain.registry import build_registry
from execution_ledger.domain.submission import (
    Requester,
    SubmissionContext,
    TaskRequest,
    enqueued_task,
    plan_tasks,
)
from execution_ledger.domain.task import Task, TaskState, task_of_enqueued

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
STAMP = datetime(2026, 12, 3, 12, 0, 0, 123456, tzinfo=UTC)


def plain_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type_name": "echo",
        "adapter": "python",
        "args": {"i": 1},
        "queue": "default",
        "priority": 0,
        "depends_on": [],
        "run_at": None,
        "lane": None,
        "idempotency_key": None,
        "principal": "system",
        "role": "admin",
        "tags": [],
        "timeouts": {"start_to_close": 300.0, "heartbeat": None},
        "retry": {"max_attempts": 3, "backoff_initial": 1.0},
        "initial_state": "ready",
        "graph_id": None,
        "ref": None,
        "adapter_settings": None,
        "inputs": None,
        "parent_id": None,
        "depth": 0,
        "signals": None,
        "trace": None,
        "singleton_key": None,
        "debounce_key": None,
        "fair_key": None,
        "registry_version": None,
    }
    return {**fields, **changes}


DEP = UUID("00000000-0000-0000-0000-00000000d0e5")
KINDS = {
    "plain": plain_fields(),
    "every field set": plain_fields(
        type_name="agent.step",
        adapter="http",
        args={"prompt": "ünïcode ✓", "n": [1, 2.5, None], "nested": {"a": True}},
        queue="agents",
        priority=-7,
        depends_on=[DEP],
        run_at=NOW + timedelta(hours=1),
        lane="agent:7",
        idempotency_key="key-1",
        principal="alice",
        role="operator",
        tags=["a", "b"],
        initial_state="blocked",
        graph_id=uuid4(),
        ref="step",
        adapter_settings={"url": "http://x"},
        inputs={"prev": DEP},
        parent_id=uuid4(),
        depth=2,
        signals=["approve"],
        trace={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
        singleton_key="echo:s",
        debounce_key="echo:d",
        fair_key="tenant-1",
        registry_version=4,
    ),
    "scheduled": plain_fields(initial_state="scheduled", run_at=NOW + timedelta(days=1)),
}


def both_ways(fields: dict[str, Any]) -> tuple[Task, Task]:
    """The task as the library makes it and as ``enqueued_task`` does, at the same moment."""
    task_id = uuid4()
    with mock.patch.object(Task.TaskEnqueued, "create_timestamp", return_value=STAMP):
        by_library = Task(id=task_id, **fields)
        direct = enqueued_task(task_id, **fields)
    return by_library, direct


def library_mapper() -> Mapper[UUID]:
    """The mapper the ledger's application uses (the library's default transcodings)."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return Mapper(transcoder=transcoder)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_aggregate_matches_the_library_attribute_by_attribute(kind: str) -> None:
    by_library, direct = both_ways(KINDS[kind])
    assert type(direct) is Task
    assert list(vars(direct)) == list(vars(by_library))  # same attributes, same order
    for name, value in vars(by_library).items():
        assert vars(direct)[name] == value, name
        assert type(vars(direct)[name]) is type(value), name
    assert direct.state is TaskState(KINDS[kind]["initial_state"])
    assert (direct.id, direct.version, direct.created_on) == (by_library.id, 1, STAMP)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_pending_event_matches_field_by_field_and_stores_the_same_bytes(kind: str) -> None:
    by_library, direct = both_ways(KINDS[kind])
    [expected], [event] = by_library.pending_events, direct.pending_events
    assert type(event) is type(expected) is Task.TaskEnqueued
    for field in dataclasses.fields(expected):
        assert getattr(event, field.name) == getattr(expected, field.name), field.name
    assert list(vars(event)) == list(vars(expected))  # the stored JSON keeps this key order
    mapper = library_mapper()
    assert mapper.to_stored_event(event) == mapper.to_stored_event(expected)
    assert [e.originator_version for e in direct.collect_events()] == [1]
    assert direct.pending_events == []


def test_the_stored_event_loads_back_into_the_same_task() -> None:
    _, direct = both_ways(KINDS["every field set"])
    mapper = library_mapper()
    stored = mapper.to_stored_event(direct.pending_events[0])
    loaded = mapper.to_domain_event(stored).mutate(None)
    assert isinstance(loaded, Task)
    skip = {"_pending_events"}
    assert {k: v for k, v in vars(loaded).items() if k not in skip} == {
        k: v for k, v in vars(direct).items() if k not in skip
    }


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_loaded_enqueue_folds_into_the_task_the_library_folds(kind: str) -> None:
    _, direct = both_ways(KINDS[kind])
    mapper = library_mapper()
    loaded = mapper.to_domain_event(mapper.to_stored_event(direct.pending_events[0]))
    by_library, folded = loaded.mutate(None), task_of_enqueued(loaded)
    assert type(folded) is Task
    assert list(vars(folded)) == list(vars(by_library))
    for name, value in vars(by_library).items():
        assert vars(folded)[name] == value, name
        assert type(vars(folded)[name]) is type(value), name


def test_an_enqueue_stored_before_the_later_fields_folds_with_their_defaults() -> None:
    _, direct = both_ways(KINDS["plain"])
    mapper = library_mapper()
    stored = mapper.to_stored_event(direct.pending_events[0])
    state = mapper.transcoder.decode(stored.state)
    for later in ("inputs", "parent_id", "depth", "signals", "trace", "registry_version"):
        del state[later]  # as events stored before these fields existed
    old = dataclasses.replace(stored, state=mapper.transcoder.encode(state))
    loaded = mapper.to_domain_event(old)
    assert "depth" not in vars(loaded)
    by_library, folded = loaded.mutate(None), task_of_enqueued(loaded)
    assert vars(folded) == vars(by_library)
    assert folded.depth == 0 and folded.parent_id is None


def test_planned_tasks_are_the_ones_the_library_would_make() -> None:
    registry = build_registry(
        {
            "queues": {"q": {"fair_key": "{tenant}"}},
            "task_types": {
                "echo": {"adapter": "python", "queue": "q", "lane": "t:{tenant}", "tags": ["x"]}
            },
        }
    )
    ids = iter(uuid4() for _ in range(10))
    context = SubmissionContext(
        registry=registry,
        requester=Requester("alice", "admin"),
        now=NOW,
        new_id=lambda: next(ids),
    )
    requests = [
        TaskRequest("echo", {"tenant": "a"}, ref="first"),
        TaskRequest("echo", {"tenant": "b"}, depends_on=("first",), inputs=True),
    ]
    planned = plan_tasks(context, requests, {}, graph_id=uuid4())
    for task in planned:
        event = task.pending_events[0]
        fields = {
            name: getattr(event, name)
            for name in vars(event)
            if name not in {"originator_id", "originator_version", "timestamp", "originator_topic"}
        }
        with mock.patch.object(Task.TaskEnqueued, "create_timestamp", return_value=event.timestamp):
            by_library = Task(id=task.id, **fields)
        assert by_library.pending_events == task.pending_events
        assert vars(by_library) == vars(task)


def test_tasks_of_one_submission_share_no_dict_and_match_a_lone_plan() -> None:
    """The timeouts and retry policy are worked out once per submission; each task still
    gets dicts of its own (changing one task's changes no other's)."""
    registry = build_registry(
        {
            "task_types": {
                "echo": {
                    "adapter": "python",
                    "retry": {"max_attempts": 4, "non_retryable": ["ValueError"]},
                    "timeouts": {"heartbeat": "10s"},
                }
            }
        }
    )
    context = SubmissionContext(
        registry=registry, requester=Requester("alice", "admin"), now=NOW, new_id=uuid4
    )
    first, second = plan_tasks(
        context, [TaskRequest("echo", {"n": 1}), TaskRequest("echo", {"n": 2})], {}
    )
    [alone] = plan_tasks(context, [TaskRequest("echo", {"n": 3})], {})
    events = [t.pending_events[0] for t in (first, second, alone)]
    for name in ("timeouts", "retry"):
        values = [getattr(e, name) for e in events]
        assert values[0] == values[1] == values[2]
        assert values[0] is not values[1]
    assert first.retry["non_retryable"] == ["ValueError"]
    assert events[0].retry["non_retryable"] is not events[1].retry["non_retryable"]
    assert events[0].timeouts["heartbeat"] == 10.0


def test_fields_left_out_take_the_event_defaults_as_the_library_gives_them() -> None:
    fields = plain_fields()
    for defaulted in ("trace", "registry_version", "fair_key", "depth"):
        del fields[defaulted]
    by_library, direct = both_ways(fields)
    assert vars(direct) == vars(by_library)
    mapper = library_mapper()
    assert mapper.to_stored_event(direct.pending_events[0]) == mapper.to_stored_event(
        by_library.pending_events[0]
    )


def test_an_id_that_is_not_a_uuid_is_refused_as_the_library_refuses_it() -> None:
    with pytest.raises(TypeError, match="non-UUID originator_id"):
        Task(id="not-a-uuid", **plain_fields())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non-UUID originator_id"):
        enqueued_task("not-a-uuid", **plain_fields())  # type: ignore[arg-type]
