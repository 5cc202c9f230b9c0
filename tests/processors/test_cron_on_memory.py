"""The cron scheduler on the in-memory ports (``InMemoryScheduleClock``,
``InMemoryEnqueuer``) with a manual clock, in milliseconds: one task per tick whatever the
number of schedulers, missed ticks caught up by the schedule's rule, a paused schedule not
caught up, and the ticks run by a worker. On PostgreSQL: ``test_cron.py``."""

from __future__ import annotations

import textwrap
import threading
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from execution_ledger.adapters.memory.schedule_clock import InMemoryScheduleClock
from execution_ledger.domain.execution import Execution, ExecutionResult, Success
from execution_ledger.domain.task import TaskState
from execution_ledger.processors.cron import CronScheduler, Fired
from tests.processors.memory_world import MemoryWorld

CONFIG = textwrap.dedent(
    """
    [task_types.beat]
    adapter = "test"

    [schedules.minutely]
    cron = "* * * * *"
    task_type = "beat"
    args = { source = "cron" }
    catch_up = "all"
    max_catch_up = 5

    [schedules.hourly_latest]
    cron = "0 * * * *"
    task_type = "beat"
    catch_up = "latest"
    """
)
T0 = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


class CronWorld(MemoryWorld):
    def __init__(self) -> None:
        super().__init__(CONFIG)
        self.schedule_clock = InMemoryScheduleClock()
        self.clock.advance((T0 - self.clock()).total_seconds())

    def scheduler(self) -> CronScheduler:
        return CronScheduler(
            self.registry.schedules, self.schedule_clock, self.enqueuer, self.clock
        )


def of(fired: list[Fired], name: str) -> list[Fired]:
    return [f for f in fired if f.schedule == name]


def test_a_schedule_seen_for_the_first_time_fires_nothing_missed() -> None:
    assert CronWorld().scheduler().run_once() == []


def test_each_tick_enqueues_exactly_one_task_whatever_the_number_of_schedulers() -> None:
    world = CronWorld()
    world.scheduler().run_once()
    world.clock.advance(180)  # ticks 12:01, 12:02, 12:03
    racers = [world.scheduler() for _ in range(4)]
    barrier = threading.Barrier(len(racers))
    results: list[list[Fired]] = []

    def race(scheduler: CronScheduler) -> None:
        barrier.wait()
        results.append(scheduler.run_once())

    threads = [threading.Thread(target=race, args=(s,)) for s in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fired = [f for batch in results for f in of(batch, "minutely")]
    assert len({f.task_id for f in fired}) == len([f for f in fired if f.created]) == 3
    assert all(world.task(f.task_id).args == {"source": "cron"} for f in fired if f.task_id)


def test_missed_ticks_are_caught_up_by_each_schedules_rule() -> None:
    world = CronWorld()
    world.scheduler().run_once()
    world.clock.advance(3 * 3600)  # downtime: 180 minutely ticks, 3 hourly ticks missed
    fired = world.scheduler().run_once()
    assert len(of(fired, "minutely")) == 5  # catch_up = all, bounded by max_catch_up
    assert [f.tick for f in of(fired, "hourly_latest")] == [datetime(2026, 3, 1, 15, tzinfo=UTC)]


def test_a_paused_schedule_fires_nothing_and_does_not_catch_up_when_resumed() -> None:
    world = CronWorld()
    world.scheduler().run_once()
    world.schedule_clock.set_paused("minutely", True)
    world.clock.advance(180)
    assert of(world.scheduler().run_once(), "minutely") == []
    world.schedule_clock.set_paused("minutely", False)
    world.clock.advance(60)
    fired = of(world.scheduler().run_once(), "minutely")
    assert [f.tick for f in fired] == [datetime(2026, 3, 1, 12, 4, tzinfo=UTC)]


def test_the_ticks_are_run_by_a_worker() -> None:
    world = CronWorld()
    scheduler = world.scheduler()
    scheduler.run_once()
    fired: list[Fired] = []

    async def beat(execution: Execution) -> ExecutionResult:
        return Success(execution.args)

    def three_ran() -> bool:
        fired.extend(of(scheduler.run_once(), "minutely"))  # the node's cron pass
        ran = [f for f in fired if world.task(f.task_id).state is TaskState.SUCCEEDED]  # type: ignore[arg-type]
        return len(ran) >= 3

    worker, executor = world.worker({"beat": beat})
    world.run_until(worker, three_ran, tick=20.0)
    assert len({f.tick for f in fired}) == len(fired)  # one task per tick
    assert all(run.args == {"source": "cron"} for run in executor.runs)
    ticks = sorted(f.tick for f in fired)
    assert all(later - earlier == timedelta(minutes=1) for earlier, later in pairwise(ticks))
