"""Retry on a concurrent write: a load-decide-save step that loses a race to a real
concurrent save is decided again on a fresh load, at most ``CONFLICT_TRIES`` times, then
``KeptChanging`` names what kept changing; nothing of a lost try is stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError

from execution_ledger.adapters.postgres.concurrent_write import (
    AGAIN,
    CONFLICT_TRIES,
    Again,
    KeptChanging,
    retry_on_conflict,
)
from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.projection_runner import ProjectionRunner
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import InvalidTransition
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import Task, TaskState
from execution_ledger.projections.readiness import ReadinessGraph
from tests.helpers import succeed


def _priorities(store: EventStore, task_id: UUID) -> list[tuple[int, str]]:
    """(priority, by) of each ``TaskReprioritised`` in the task's history."""
    return [
        (r.event.priority, r.event.by)  # type: ignore[attr-defined]
        for r in store.history(task_id)
        if type(r.event).__name__ == "TaskReprioritised"
    ]


def _reprioritise_elsewhere(store: EventStore, task_id: UUID, priority: int) -> None:
    """A concurrent writer: another copy of the task, changed and saved."""
    other = store.load(task_id)
    other.reprioritise(priority, by="other")
    store.save(other)


def test_a_step_that_lost_a_race_is_decided_again_on_a_fresh_load(runtime: Runtime) -> None:
    store = runtime.store
    task = runtime.ledger.enqueue(TaskRequest("echo"))
    tries: list[int] = []

    def step() -> Task:
        loaded = store.load(task.id)
        tries.append(loaded.priority)
        if len(tries) == 1:
            _reprioritise_elsewhere(store, task.id, 5)  # between our load and our save
        loaded.reprioritise(loaded.priority + 1, by="step")
        store.save(loaded)
        return loaded

    saved = retry_on_conflict(step, what=f"task {task.id}")
    assert tries == [0, 5]  # the second try saw the concurrent write
    assert saved.priority == 6
    assert _priorities(store, task.id) == [(5, "other"), (6, "step")]


def test_a_step_that_keeps_losing_stops_at_the_bound_and_names_what_changed(
    runtime: Runtime,
) -> None:
    store = runtime.store
    task = runtime.ledger.enqueue(TaskRequest("echo"))
    conflicts: list[int] = []

    def step() -> None:
        loaded = store.load(task.id)
        _reprioritise_elsewhere(store, task.id, loaded.priority + 10)
        loaded.reprioritise(1, by="step")
        store.save(loaded)

    with pytest.raises(KeptChanging) as raised:
        retry_on_conflict(step, what=f"task {task.id}", on_conflict=conflicts.append)
    assert isinstance(raised.value, InvalidTransition)  # answered as a 409, not a 500
    assert raised.value.code == "invalid_transition"
    assert str(raised.value) == (
        f"task {task.id} kept changing: each of {CONFLICT_TRIES} tries met a concurrent "
        "write; try again"
    )
    assert conflicts == list(range(1, CONFLICT_TRIES + 1))
    # Every try of the step was rolled back; only the concurrent writer's saves are stored.
    assert [by for _, by in _priorities(store, task.id)] == ["other"] * CONFLICT_TRIES


def test_a_conflict_that_is_the_answer_is_raised_at_once(runtime: Runtime) -> None:
    store = runtime.store
    task = runtime.ledger.enqueue(TaskRequest("echo"))
    tries = []

    def step() -> None:
        loaded = store.load(task.id)
        tries.append(1)
        _reprioritise_elsewhere(store, task.id, 3)
        loaded.reprioritise(1, by="step")
        store.save(loaded)

    with pytest.raises(IntegrityError):
        retry_on_conflict(step, what="a task", is_conflict=lambda _error: False)
    assert len(tries) == 1


def test_a_step_answering_again_is_tried_again_within_the_same_bound() -> None:
    answers: list[int | Again] = [AGAIN, AGAIN, 7]
    assert retry_on_conflict(lambda: answers.pop(0), what="a key") == 7
    with pytest.raises(KeptChanging, match=r"^a key kept changing"):
        retry_on_conflict(lambda: AGAIN, what="a key")


def test_a_cancel_of_a_task_that_keeps_changing_is_refused_and_stores_no_cancel(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Ledger._change`` through the helper: each of its loads is overtaken by another
    writer before its save, so the cancel is refused in one line and the task stays."""
    store = runtime.store
    task = runtime.ledger.enqueue(TaskRequest("echo"))
    load = store.load

    def overtaken_load(task_id: UUID) -> Task:
        loaded = load(task_id)
        other = load(task_id)  # the other writer's copy, saved first
        other.reprioritise(loaded.priority + 1, by="other")
        store.save(other)
        return loaded

    monkeypatch.setattr(store, "load", overtaken_load)
    with pytest.raises(KeptChanging, match=f"^task {task.id} kept changing"):
        runtime.ledger.cancel(task.id)
    monkeypatch.undo()
    assert store.load(task.id).state is TaskState.READY
    assert len(_priorities(store, task.id)) == CONFLICT_TRIES


class _Overtaken:
    """A reactor whose append meets a concurrent write on its first ``losses`` tries: it
    reprioritises ``task_id``, and another writer saves that task's next version first."""

    def __init__(self, store: EventStore, task_id: UUID, losses: int) -> None:
        self.store, self.task_id, self.losses, self.tries = store, task_id, losses, 0

    def react(self, changes: Sequence[Any]) -> list[Task]:
        self.tries += 1
        task = self.store.load(self.task_id)
        if self.tries <= self.losses:
            _reprioritise_elsewhere(self.store, self.task_id, 100 + self.tries)
        task.reprioritise(7, by="reactor")
        return [task]


def _readiness_runner(runtime: Runtime, reactor: _Overtaken) -> ProjectionRunner:
    """A readiness runner whose next batch has a change for its reactor (a dependency's
    success unblocks its dependent)."""
    parent, _child = runtime.ledger.enqueue_graph(
        [
            TaskRequest("echo", ref="parent"),
            TaskRequest("echo", ref="child", depends_on=("parent",)),
        ]
    )
    runner = ProjectionRunner(runtime.store, ReadinessGraph(runtime.store.schema), reactor)
    runner.catch_up()
    succeed(runtime.store, parent.id)
    return runner


def test_a_projection_batch_whose_append_lost_a_race_is_applied_again(runtime: Runtime) -> None:
    target = runtime.ledger.enqueue(TaskRequest("echo"))
    reactor = _Overtaken(runtime.store, target.id, losses=1)
    runner = _readiness_runner(runtime, reactor)
    reactor.tries = 0
    success_at = runtime.store.head_position()
    assert runner.run_batch() > 0
    assert reactor.tries == 2
    # The reactor's append committed once, with the batch: the position is past the success.
    assert _priorities(runtime.store, target.id) == [(101, "other"), (7, "reactor")]
    assert runner.position() >= success_at


def test_a_projection_batch_that_keeps_conflicting_stops_and_keeps_its_position(
    runtime: Runtime,
) -> None:
    target = runtime.ledger.enqueue(TaskRequest("echo"))
    reactor = _Overtaken(runtime.store, target.id, losses=CONFLICT_TRIES)
    runner = _readiness_runner(runtime, reactor)
    reactor.tries = 0
    before = runner.position()
    with pytest.raises(KeptChanging, match=r"^the batch of projection readiness kept changing"):
        runner.run_batch()
    assert reactor.tries == CONFLICT_TRIES
    assert runner.position() == before
    assert [by for _, by in _priorities(runtime.store, target.id)] == ["other"] * CONFLICT_TRIES
