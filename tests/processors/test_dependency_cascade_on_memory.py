"""The dependency cascade on the in-memory task store, in milliseconds: the readiness
graph's changes become one ``TaskUnblocked`` or ``TaskSkipped`` each, and a change the
store has moved past (a retry after the failure, a rebuild) appends nothing. The graph
itself and the cascade inside its transaction: ``test_dependency_cascade.py``."""

from __future__ import annotations

from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import Task, TaskState
from execution_ledger.processors.dependency_cascade import DependencyCascade
from execution_ledger.projections.readiness import Doomed, Unblocked
from tests.processors.memory_world import MemoryWorld

CONFIG = """
[task_types.step]
adapter = "test"
"""


def chain(world: MemoryWorld) -> tuple[Task, Task]:
    first, then = world.enqueuer.enqueue_graph(
        [TaskRequest("step", ref="first"), TaskRequest("step", ref="then", depends_on=("first",))]
    )
    return first, then


def end(world: MemoryWorld, task: Task, ending: str) -> Task:
    """Give ``task`` an end of its own (succeeded after a start, or cancelled)."""
    stored = world.store.load(task.id)
    if ending == "cancelled":
        stored.cancel(by="test")
    else:
        stored.start("w1", world.clock(), world.clock())
        stored.succeed(1, None)
    world.store.save(stored)
    return stored


def test_a_change_saying_no_dependency_is_pending_unblocks_the_task() -> None:
    world = MemoryWorld(CONFIG)
    first, then = chain(world)
    end(world, first, "succeeded")
    cascade = DependencyCascade(world.store, world.clock)
    [unblocked] = cascade.react([Unblocked(then.id, then.version)])
    world.store.save(unblocked)
    assert world.task(then.id).state is TaskState.READY


def test_a_dependency_that_ended_otherwise_skips_its_dependent() -> None:
    world = MemoryWorld(CONFIG)
    first, then = chain(world)
    ended = end(world, first, "cancelled")
    cascade = DependencyCascade(world.store, world.clock)
    change = Doomed(then.id, then.version, first.id, ended.version, "cancelled")
    [skipped] = cascade.react([change])
    world.store.save(skipped)
    assert world.task(then.id).state is TaskState.SKIPPED


def test_a_change_the_store_has_moved_past_appends_nothing() -> None:
    world = MemoryWorld(CONFIG)
    first, then = chain(world)
    ended = end(world, first, "cancelled")
    stale_dependency = Doomed(then.id, then.version, first.id, ended.version - 1, "cancelled")
    stale_task = Unblocked(then.id, then.version - 1)
    cascade = DependencyCascade(world.store, world.clock)
    assert cascade.react([stale_dependency, stale_task]) == []
    assert world.task(then.id).state is TaskState.BLOCKED
