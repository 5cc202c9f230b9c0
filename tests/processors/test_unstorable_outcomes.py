"""What a task's code or output gives back is stored whatever it holds, and one outcome the
store refuses never stops a worker.

- A NUL or a lone surrogate in a result, an error or a progress message becomes U+FFFD
  (``domain/storable.py``): on PostgreSQL, a Python task's result and exception, a shell
  task's output; the task view shows them (a NUL once stopped it for every task, a lone
  surrogate stopped its worker from recording any outcome).
- An outcome the store refuses all the same is recorded as ``UnstorableOutcome`` and the
  others of its round as they are; a worker stopping while the database is away tries
  again for its grace, then leaves the rest to the watchdog (it once retried in a busy loop
  and never stopped). These two on the in-memory ports, whose store a test can make refuse.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import OperationalError

from execution_ledger.adapters.memory.dispatch import InMemoryDispatch
from execution_ledger.adapters.postgres.task_queries import get_task_row
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.execution import AttemptOutcome, Execution, ExecutionResult, Success
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from tests.processors.memory_world import MemoryWorld
from tests.processors.worker_harness import run_nodes_until, runtime_with_config

R = "\ufffd"
CONFIG = textwrap.dedent(
    """
    [task_types.nul_result]
    adapter = "python"
    settings = { callable = "tests.processors.unstorable_tasks:nul_result" }

    [task_types.surrogate_result]
    adapter = "python"
    settings = { callable = "tests.processors.unstorable_tasks:surrogate_result" }

    [task_types.raises_unstorable]
    adapter = "python"
    retry = { max_attempts = 1 }
    settings = { callable = "tests.processors.unstorable_tasks:raises_unstorable" }

    [task_types.nul_output]
    adapter = "shell"
    settings = { argv = ["/usr/bin/printf", "a\\\\0b"] }

    [task_types.plain]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
    """
)


@pytest.fixture
def rt(ledger_env: None, tmp_path: Path) -> Iterator[Runtime]:
    """The test's schema, opened with this module's registry."""
    opened = runtime_with_config(tmp_path, CONFIG)
    yield opened
    opened.close()


def test_results_and_errors_that_postgres_cannot_store_are_stored_with_replacements(
    rt: Runtime,
) -> None:
    names = ["nul_result", "surrogate_result", "raises_unstorable", "nul_output", "plain"]
    ids = {name: rt.ledger.enqueue(TaskRequest(name, {"message": "hi"})).id for name in names}

    def all_ended() -> bool:
        return all(rt.store.load(task_id).state.is_terminal for task_id in ids.values())

    run_nodes_until(rt, all_ended)
    tasks = {name: rt.store.load(task_id) for name, task_id in ids.items()}
    assert tasks["nul_result"].result == {"text": f"a{R}b", f"key{R}": [1, R]}
    assert tasks["surrogate_result"].result == f"a{R}b"
    assert tasks["raises_unstorable"].state is TaskState.FAILED
    assert tasks["raises_unstorable"].error["message"] == f"bad{R}input {R} here"
    assert tasks["nul_output"].result["stdout"] == f"a{R}b"
    assert tasks["plain"].result == {"message": "hi"}
    rt.catch_up()  # the read models fold them all
    rows = {name: get_task_row(rt.store, task_id) for name, task_id in ids.items()}
    assert rows["nul_result"]["result"] == {"text": f"a{R}b", f"key{R}": [1, R]}
    assert rows["raises_unstorable"]["error"]["message"] == f"bad{R}input {R} here"
    assert rows["plain"]["state"] == "succeeded"


def test_a_nul_or_nan_stored_by_an_earlier_release_does_not_stop_the_read_models(
    rt: Runtime,
) -> None:
    """Events written by an earlier release may hold a NUL or a NaN (the domain's own
    methods still take them): the task view and the dataset fold them as
    ``domain/storable.py`` makes them instead of stopping."""
    from tests.helpers import start

    first, second, third = (rt.ledger.enqueue(TaskRequest("plain", {})).id for _ in range(3))
    results = {first: {"out": "x\x00y", "ratio": float("nan")}, third: "fine"}
    for task_id in (first, second, third):
        attempt = start(rt.store, task_id)
        task = rt.store.load(task_id)
        if task_id in results:
            task.succeed(attempt, results[task_id])
        else:
            task.fail(attempt, "Bad\x00Class", "no\x00pe", retryable=False)
        rt.store.save(task)
    rt.catch_up()
    rows = {task_id: get_task_row(rt.store, task_id) for task_id in (first, second, third)}
    assert rows[first]["result"] == {"out": f"x{R}y", "ratio": "NaN"}
    assert rows[second]["error"]["class"] == f"Bad{R}Class"
    assert rows[second]["error"]["message"] == f"no{R}pe"
    assert rows[third]["result"] == "fine"
    with rt.store.transaction() as cursor:
        classes = cursor.execute(
            f'SELECT error_class FROM "{rt.settings.schema}".attempt_dataset '
            "WHERE task_id = %s",
            (second,),
        ).fetchall()
    assert classes == [{"error_class": f"Bad{R}Class"}]


# -- the worker, on the in-memory ports ----------------------------------------------------

MEMORY_CONFIG = textwrap.dedent(
    """
    [task_types.step]
    adapter = "test"
    retry = { max_attempts = 3 }
    [task_types.talker]
    adapter = "test"
    """
)


class RefusingDispatch(InMemoryDispatch):
    """Refuses, as a store refusing data would, every round that records the success of
    ``poison``; or, once ``away`` is set, fails every call as a database that went away."""

    poison: UUID | None = None
    away = False
    calls = 0

    def _check(self, outcomes: Sequence[AttemptOutcome]) -> None:
        self.calls += 1
        if self.away:
            raise OperationalError("the database went away")
        if any(o.task_id == self.poison and isinstance(o.result, Success) for o in outcomes):
            raise ValueError("the store refuses this outcome")

    def claim(
        self,
        queues: Sequence[str],
        limit: int,
        worker: str,
        outcomes: Sequence[AttemptOutcome] = (),
    ) -> list[Any]:
        self._check(outcomes)
        return super().claim(queues, limit, worker, outcomes)

    def complete(self, outcomes: Sequence[AttemptOutcome]) -> None:
        self._check(outcomes)
        super().complete(outcomes)


def refusing_world() -> tuple[MemoryWorld, RefusingDispatch]:
    world = MemoryWorld(MEMORY_CONFIG)
    world.dispatch = dispatch = RefusingDispatch(world.store, world.registry, world.clock)
    return world, dispatch


async def succeed(execution: Execution) -> ExecutionResult:
    return Success({"n": execution.args.get("n")})


def test_an_outcome_the_store_refuses_fails_its_task_and_holds_back_no_other() -> None:
    world, dispatch = refusing_world()
    ids = [world.enqueue("step", n=n) for n in range(5)]
    dispatch.poison = ids[2]
    worker, _ = world.worker({"step": succeed})
    world.run_until(worker, lambda: all(world.task(i).state.is_terminal for i in ids))
    poisoned = world.task(ids[2])
    assert (poisoned.state, poisoned.error["class"], poisoned.attempts) == (
        TaskState.FAILED,
        "UnstorableOutcome",
        1,  # not retried: its code would give the same again
    )
    others = [world.task(i) for i in ids if i != ids[2]]
    assert [(t.state, t.result) for t in others] == [
        (TaskState.SUCCEEDED, {"n": n}) for n in (0, 1, 3, 4)
    ]


def test_a_worker_stopping_while_the_database_is_away_stops_after_its_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world, dispatch = refusing_world()
    task_id = world.enqueue("step", n=1)
    ended = asyncio.Event()

    async def end_when_the_database_is_gone(execution: Execution) -> ExecutionResult:
        dispatch.away = True
        ended.set()
        return Success("done")

    worker, _ = world.worker({"step": end_when_the_database_is_gone}, shutdown_grace=0.3)

    async def main() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        await ended.wait()
        stop.set()
        async with asyncio.timeout(10):  # it once retried in a busy loop, forever
            await running

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert "1 outcomes not recorded (the database is away)" in caplog.text
    assert dispatch.calls < 30  # tried again after pauses, not in a loop
    assert world.task(task_id).state is TaskState.RUNNING  # left to the watchdog


def test_a_progress_message_that_postgres_cannot_store_is_stored_with_replacements() -> None:
    world = MemoryWorld(MEMORY_CONFIG)
    task_id = world.enqueue("talker")

    async def talk(execution: Execution) -> ExecutionResult:
        assert execution.progress is not None
        execution.progress(0.5, "half\x00way \ud800")
        while world.task(task_id).progress_message is None:
            await asyncio.sleep(0.001)
        return Success(None)

    worker, _ = world.worker({"talker": talk}, progress_interval=0.0)
    world.run_until(worker, lambda: world.task(task_id).state.is_terminal)
    assert world.task(task_id).progress_message == f"half{R}way {R}"
