"""The pure rules of bulk actions: which states each action changes, the new placement events
of a waiting task (and their refusal once it started), and a bulk action's own life cycle."""

from __future__ import annotations

from dataclasses import replace
from uuid import uuid4

import pytest

from execution_ledger.domain.bulk import (
    BulkAction,
    BulkKind,
    apply_change,
    check_state_filter,
    plan_change,
)
from execution_ledger.domain.errors import InvalidQuery, InvalidTransition
from execution_ledger.domain.task import Task
from tests.domain.test_task_lifecycle import NOW, REGISTRY, brought_to, events_of, task_in

BULK = uuid4()


@pytest.mark.parametrize("state", ["blocked", "scheduled", "ready"])
def test_a_waiting_task_takes_a_new_priority_and_queue_and_keeps_its_state(state: str) -> None:
    task = task_in(state)
    task.reprioritise(90, by="olga", bulk_id=BULK)
    task.move("agents", by="olga")
    assert events_of(task) == ["TaskReprioritised", "TaskMoved"]
    assert (task.priority, task.queue, task.state.value) == (90, "agents", state)


@pytest.mark.parametrize("state", ["running", "succeeded", "failed", "cancelled", "skipped"])
def test_a_task_that_started_or_ended_keeps_its_priority_and_queue(state: str) -> None:
    task = task_in(state)
    with pytest.raises(InvalidTransition, match=f"it is {state}"):
        task.reprioritise(90, by="olga")
    with pytest.raises(InvalidTransition, match=f"it is {state}"):
        task.move("agents", by="olga")
    assert events_of(task) == []


def test_a_replayed_task_has_its_new_placement() -> None:
    task = brought_to("ready")
    task.reprioritise(-5, by="olga", bulk_id=BULK)
    task.move("agents", by="olga", bulk_id=BULK)
    replayed = None
    for event in task.collect_events():
        replayed = event.mutate(replayed)
    assert isinstance(replayed, Task)
    assert (replayed.priority, replayed.queue) == (-5, "agents")


@pytest.mark.parametrize(
    ("action", "changes", "leaves"),
    [
        ("cancel", ["blocked", "scheduled", "ready", "running"], ["succeeded", "failed"]),
        ("retry", ["failed", "cancelled", "skipped"], ["ready", "running", "succeeded"]),
        ("reprioritise", ["blocked", "scheduled", "ready"], ["running", "failed"]),
        ("move", ["blocked", "scheduled", "ready"], ["running", "cancelled"]),
    ],
)
def test_each_action_changes_its_states_only(
    action: str, changes: list[str], leaves: list[str]
) -> None:
    options = {"reprioritise": {"priority": 9}, "move": {"queue": "agents"}}.get(action, {})
    change = plan_change(REGISTRY_WITH_AGENTS, action, **options)  # type: ignore[arg-type]
    for state in changes:
        task = task_in(state)
        assert apply_change(change, task, "olga", BULK, NOW)
        assert [e.bulk_id for e in task.collect_events()] == [BULK]  # type: ignore[attr-defined]
    for state in leaves:
        task = task_in(state)
        with pytest.raises(InvalidTransition):
            apply_change(change, task, "olga", BULK, NOW)
        with pytest.raises(InvalidQuery, match=f"no task in state '{state}'"):
            check_state_filter(change, state)
        assert events_of(task) == []


def test_a_bulk_action_records_its_request_progress_and_end() -> None:
    change = plan_change(REGISTRY, "cancel", reason="bad deploy")
    action = BulkAction.request(change, {"tag": "t"}, "olga", "admin", matched=3)
    action.progress(2, 0)
    action.complete(2, 1)
    kinds = [type(e).__name__ for e in action.collect_events()]
    assert kinds == ["BulkActionRequested", "BulkActionProgressed", "BulkActionCompleted"]
    assert (action.state, action.changed, action.skipped) == ("completed", 2, 1)
    assert action.change.kind is BulkKind.CANCEL
    with pytest.raises(InvalidTransition, match="it is completed"):
        action.stop(2, 1, "too late")


REGISTRY_WITH_AGENTS = replace(
    REGISTRY, queues={**REGISTRY.queues, "agents": REGISTRY.queue("agents")}
)
