"""The worker loop on the in-memory ports, in milliseconds: retries after their back-off,
``start_to_close`` enforced, queue and lane limits held, cancellation and shutdown, a
dependent given its dependency's result. The same behaviours on PostgreSQL are
``test_worker.py``'s; the doubles keep the Postgres promises (``tests/contract/``)."""

from __future__ import annotations

import asyncio
import textwrap
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from itertools import pairwise

from execution_ledger.domain.execution import (
    AttemptOutcome,
    ClaimedAttempt,
    Execution,
    ExecutionResult,
    Failure,
    Success,
)
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from tests.processors.memory_world import MemoryWorld

CONFIG = textwrap.dedent(
    """
    [defaults.timeouts]
    start_to_close = "20s"
    heartbeat = "5s"

    [queues.default]
    concurrency = 10

    [queues.narrow]
    concurrency = 2

    [lanes."agent:*"]
    limit = 1

    [task_types.flaky]
    adapter = "test"
    retry = { max_attempts = 3, backoff_initial = "30s", backoff_max = "30s", jitter = 0 }

    [task_types.slow]
    adapter = "test"
    timeouts = { start_to_close = "50ms" }
    retry = { max_attempts = 2, backoff_initial = "10s", jitter = 0 }

    [task_types.hang]
    adapter = "test"
    retry = { max_attempts = 1 }

    [task_types.narrow_step]
    adapter = "test"
    queue = "narrow"

    [task_types.agent_step]
    adapter = "test"
    lane = "agent:{agent_id}"

    [task_types.produce]
    adapter = "test"

    [task_types.hop]
    adapter = "test"

    [task_types.consume]
    adapter = "test"
    inputs = true
    """
)
BACKOFF = timedelta(seconds=30)


async def succeed(execution: Execution) -> ExecutionResult:
    return Success({"attempt": execution.attempt})


async def fail_twice(execution: Execution) -> ExecutionResult:
    if execution.attempt < 3:
        return Failure("Flaky", f"attempt {execution.attempt} broke")
    return Success("third time")


async def always_fail(execution: Execution) -> ExecutionResult:
    return Failure("Flaky", "broke again")


async def hang(execution: Execution) -> ExecutionResult:
    await asyncio.Event().wait()
    raise AssertionError("never set")


def test_a_failing_task_is_retried_after_its_backoff_until_it_succeeds() -> None:
    world = MemoryWorld(CONFIG)
    task_id = world.enqueue("flaky")
    worker, executor = world.worker({"flaky": fail_twice})
    world.run_until(worker, lambda: world.task(task_id).state.is_terminal, tick=5.0)
    task = world.task(task_id)
    assert (task.state, task.attempts, task.result) == (TaskState.SUCCEEDED, 3, "third time")
    began = [run.began for run in executor.runs]
    assert [run.attempt for run in executor.runs] == [1, 2, 3]
    assert all(later - earlier >= BACKOFF for earlier, later in pairwise(began))


def test_a_task_that_keeps_failing_ends_failed_after_its_last_attempt() -> None:
    world = MemoryWorld(CONFIG)
    task_id = world.enqueue("flaky")
    worker, executor = world.worker({"flaky": always_fail})
    world.run_until(worker, lambda: world.task(task_id).state.is_terminal, tick=5.0)
    task = world.task(task_id)
    assert (task.state, task.attempts, task.error["class"]) == (TaskState.FAILED, 3, "Flaky")
    assert len(executor.runs) == 3


def test_an_attempt_over_its_start_to_close_is_stopped_and_retried() -> None:
    world = MemoryWorld(CONFIG)
    task_id = world.enqueue("slow")
    stopped: list[int] = []

    async def hang_first(execution: Execution) -> ExecutionResult:
        if execution.attempt == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                stopped.append(execution.attempt)
                raise
        return Success("in time")

    worker, _ = world.worker({"slow": hang_first})
    world.run_until(worker, lambda: world.task(task_id).state.is_terminal, tick=1.0)
    task = world.task(task_id)
    assert (task.state, task.attempts, task.result) == (TaskState.SUCCEEDED, 2, "in time")
    assert stopped == [1]  # the first attempt's code was cancelled at its deadline


def test_a_queue_runs_at_most_its_concurrency_at_once() -> None:
    world = MemoryWorld(CONFIG)
    ids = [world.enqueue("narrow_step") for _ in range(6)]
    running, peak = 0, 0

    async def step(execution: Execution) -> ExecutionResult:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.002)
        running -= 1
        return Success(None)

    worker, executor = world.worker({"narrow_step": step}, queues=("narrow",), concurrency=10)
    world.run_until(worker, lambda: all(world.task(i).state.is_terminal for i in ids))
    assert all(world.task(i).state is TaskState.SUCCEEDED for i in ids)
    assert peak == 2  # the narrow queue's concurrency, reached and never passed
    assert len(executor.runs) == 6


def test_a_lane_runs_its_tasks_one_at_a_time_in_enqueue_order() -> None:
    world = MemoryWorld(CONFIG)
    lane = [world.enqueue("agent_step", agent_id=1) for _ in range(4)]
    other = world.enqueue("agent_step", agent_id=2)
    running: Counter[str] = Counter()
    peaks: Counter[str] = Counter()
    together = 0

    async def step(execution: Execution) -> ExecutionResult:
        nonlocal together
        agent = str(execution.args["agent_id"])
        running[agent] += 1
        peaks[agent] = max(peaks[agent], running[agent])
        together = max(together, sum(running.values()))
        await asyncio.sleep(0.002)
        running[agent] -= 1
        return Success(None)

    worker, executor = world.worker({"agent_step": step})
    world.run_until(worker, lambda: all(world.task(i).state.is_terminal for i in [*lane, other]))
    assert peaks["1"] == 1
    assert together == 2  # the other lane is not held back
    assert [run.task_id for run in executor.runs if run.args["agent_id"] == 1] == lane


def test_a_task_cancelled_while_running_is_stopped_at_the_next_renewal() -> None:
    world = MemoryWorld(CONFIG)
    task_id = world.enqueue("hang")
    stopped: list[int] = []

    async def hang_until_stopped(execution: Execution) -> ExecutionResult:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.append(execution.attempt)
            raise
        raise AssertionError("never set")

    worker, executor = world.worker({"hang": hang_until_stopped})

    def cancelled_and_stopped() -> bool:
        if executor.runs and world.task(task_id).state is TaskState.RUNNING:
            world.cancel(task_id)
        return bool(stopped)

    world.run_until(worker, cancelled_and_stopped)
    task = world.task(task_id)
    assert (task.state, task.error) == (TaskState.CANCELLED, None)  # no outcome recorded


def test_stopping_the_worker_ends_the_attempts_still_running_after_the_grace() -> None:
    world = MemoryWorld(CONFIG)
    task_id = world.enqueue("hang")
    worker, executor = world.worker({"hang": hang}, shutdown_grace=0.01)
    world.run_until(worker, lambda: bool(executor.runs))
    task = world.task(task_id)
    assert (task.state, task.error["class"]) == (TaskState.FAILED, "WorkerShutdown")


def test_a_dependent_runs_after_its_dependency_and_is_given_its_result() -> None:
    world = MemoryWorld(CONFIG)
    produce, consume = world.enqueuer.enqueue_graph(
        [
            TaskRequest("produce", ref="produce"),
            TaskRequest("consume", ref="consume", depends_on=("produce",)),
        ]
    )
    worker, executor = world.worker({"produce": succeed, "consume": succeed})
    world.run_until(worker, lambda: world.task(consume.id).state.is_terminal)
    assert [run.type_name for run in executor.runs] == ["produce", "consume"]
    assert executor.runs[1].inputs == {
        "produce": {"result": {"attempt": 1}, "task_id": str(produce.id)}
    }
    assert world.task(consume.id).state is TaskState.SUCCEEDED


def test_a_task_that_enqueues_the_next_and_ends_has_its_end_recorded_by_the_next_claim() -> None:
    """The ready notice of work a task enqueues comes just before the task's end: the
    claim it wakes waits that moment, so one round records the end and starts the next
    (not one round for each)."""
    world = MemoryWorld(CONFIG)
    hops = 5
    rounds: list[tuple[int, int]] = []  # (started, outcomes recorded) of each round
    claim = world.dispatch.claim

    def counted_claim(
        queues: Sequence[str], limit: int, worker: str, outcomes: Sequence[AttemptOutcome] = ()
    ) -> list[ClaimedAttempt]:
        claimed = claim(queues, limit, worker, outcomes)
        rounds.append((len(claimed), len(outcomes)))
        return claimed

    world.dispatch.claim = counted_claim  # type: ignore[method-assign]
    worker, executor = world.worker({}, notice_gather=0.5)

    async def hop(execution: Execution) -> ExecutionResult:
        n = int(execution.args["n"])
        if n < hops:
            world.enqueue("hop", n=n + 1)
            worker.notify_ready()  # as the enqueue's commit notifies
            await asyncio.sleep(0.001)  # the task's own end comes a moment later
        return Success(n)

    executor.scripts = {"hop": hop}
    first = world.enqueue("hop", n=1)
    world.run_until(
        worker,
        lambda: len(executor.runs) == hops
        and all(world.task(run.task_id).state is TaskState.SUCCEEDED for run in executor.runs),
    )
    assert world.task(first).state is TaskState.SUCCEEDED
    starting = [recorded for started, recorded in rounds if started]
    assert starting == [0] + [1] * (hops - 1)  # each start after the first records an end
