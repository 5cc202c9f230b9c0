"""The task store contract (the ``TaskStore`` of ``processors/dependency_cascade.py``, and the
``save`` its callers write with): tasks saved as events and loaded by folding them, a save
all or nothing, a stale copy refused — on PostgreSQL and on the in-memory double alike."""

from __future__ import annotations

from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from execution_ledger.domain.errors import TaskNotFound
from execution_ledger.domain.submission import Requester, SubmissionContext, TaskRequest, plan_tasks
from execution_ledger.domain.task import Task, TaskState
from tests.contract.conftest import Backend


def new_task(backend: Backend, **fields: object) -> Task:
    """A task planned by the domain, not yet saved."""
    context = SubmissionContext(
        backend.registry, Requester("system", "admin"), backend.clock(), uuid4
    )
    [task] = plan_tasks(context, [TaskRequest("job", {"a": 1}, **fields)], {})  # type: ignore[arg-type]
    return task


def test_a_saved_task_loads_as_it_was_saved(backend: Backend) -> None:
    task = new_task(backend, tags=("nightly",))
    backend.store.save(task)
    loaded = backend.store.load(task.id)
    assert (loaded.id, loaded.version, loaded.state) == (task.id, 1, TaskState.READY)
    assert (loaded.args, loaded.tags, loaded.queue) == ({"a": 1}, ["nightly"], "default")


def test_loading_an_unknown_task_raises_task_not_found(backend: Backend) -> None:
    with pytest.raises(TaskNotFound):
        backend.store.load(uuid4())


def test_load_many_leaves_out_the_ids_it_does_not_know(backend: Backend) -> None:
    one, two = new_task(backend), new_task(backend)
    backend.store.save(one, two)
    loaded = backend.store.load_many([one.id, uuid4(), two.id])
    assert set(loaded) == {one.id, two.id}
    assert backend.store.load_many([]) == {}


def test_latest_versions_count_every_event_of_each_known_task(backend: Backend) -> None:
    task = new_task(backend)
    backend.store.save(task)
    task.cancel(by="system")
    backend.store.save(task)
    assert backend.store.latest_versions([task.id, uuid4()]) == {task.id: 2}


def test_a_stale_copy_is_refused_and_the_stored_history_stands(backend: Backend) -> None:
    task = new_task(backend)
    backend.store.save(task)
    first, second = backend.store.load(task.id), backend.store.load(task.id)
    first.cancel(by="alice")
    backend.store.save(first)
    second.reprioritise(7, by="bob")
    with pytest.raises(IntegrityError):
        backend.store.save(second)
    stored = backend.store.load(task.id)
    assert (stored.state, stored.version, stored.priority) == (TaskState.CANCELLED, 2, 0)


def test_a_save_is_all_or_nothing(backend: Backend) -> None:
    old = new_task(backend)
    backend.store.save(old)
    stale, current = backend.store.load(old.id), backend.store.load(old.id)
    current.cancel(by="alice")
    backend.store.save(current)
    stale.reprioritise(3, by="bob")
    fresh = new_task(backend)
    with pytest.raises(IntegrityError):
        backend.store.save(fresh, stale)
    assert backend.store.load_many([fresh.id]) == {}
