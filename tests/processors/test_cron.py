"""The cron scheduler on a real PostgreSQL: one task per tick whatever the number of
schedulers, missed ticks caught up by the schedule's rule, ticks run by a worker."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from execution_ledger.adapters.postgres.schedule_clock import PostgresScheduleClock
from execution_ledger.adapters.postgres.task_queries import TaskFilter, list_tasks
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.task import TaskState
from execution_ledger.processors.cron import CronScheduler
from tests.processors.worker_harness import run_nodes_until, runtime_with_config

CONFIG = textwrap.dedent(
    """
    [task_types.beat]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }

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

    [schedules.off]
    cron = "* * * * *"
    task_type = "beat"
    paused = true
    """
)
T0 = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
def rt(ledger_env: None, tmp_path: Path) -> Iterator[Runtime]:
    runtime = runtime_with_config(tmp_path, CONFIG)
    yield runtime
    runtime.close()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def scheduler(rt: Runtime, clock: Clock) -> CronScheduler:
    return CronScheduler(
        rt.settings.config.registry.schedules, PostgresScheduleClock(rt.store), rt.ledger, clock
    )


def scheduled_tasks(rt: Runtime, name: str) -> list[dict[str, object]]:
    rt.catch_up()
    return list_tasks(rt.store, TaskFilter(tag=f"schedule:{name}"), limit=100).rows


def test_a_schedule_seen_for_the_first_time_fires_nothing_missed(rt: Runtime) -> None:
    fired = scheduler(rt, Clock(T0)).run_once()
    assert fired == []


def test_each_tick_enqueues_exactly_one_task_whatever_the_number_of_schedulers(rt: Runtime) -> None:
    clock = Clock(T0)
    scheduler(rt, clock).run_once()
    clock.now = T0 + timedelta(minutes=3)  # ticks 12:01, 12:02, 12:03
    racers = [scheduler(rt, clock) for _ in range(4)]
    barrier = threading.Barrier(len(racers))
    results: list[list[object]] = []

    def race(s: CronScheduler) -> None:
        barrier.wait()
        results.append(s.run_once())

    threads = [threading.Thread(target=race, args=(s,)) for s in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = scheduled_tasks(rt, "minutely")
    assert len(rows) == 3
    assert all(row["args"] == {"source": "cron"} for row in rows)
    created = [f for batch in results for f in batch if f.created and f.schedule == "minutely"]  # type: ignore[attr-defined]
    assert len(created) == 3


def test_missed_ticks_are_caught_up_by_each_schedules_rule(rt: Runtime) -> None:
    clock = Clock(T0)
    scheduler(rt, clock).run_once()
    clock.now = T0 + timedelta(hours=3)  # downtime: 180 minutely ticks, 3 hourly ticks missed
    scheduler(rt, clock).run_once()
    minutely = scheduled_tasks(rt, "minutely")
    assert len(minutely) == 5  # catch_up = all, bounded by max_catch_up
    hourly = scheduled_tasks(rt, "hourly_latest")
    assert len(hourly) == 1
    assert scheduled_tasks(rt, "off") == []


def test_a_running_node_enqueues_and_runs_the_ticks(ledger_env: None, tmp_path: Path) -> None:
    runtime = runtime_with_config(
        tmp_path,
        CONFIG.replace(
            'cron = "* * * * *"\ntask_type = "beat"\nargs',
            'cron = "* * * * * *"\ntask_type = "beat"\nargs',
        ),
    )
    try:

        def two_ran() -> bool:
            rows = scheduled_tasks(runtime, "minutely")
            return sum(row["state"] == TaskState.SUCCEEDED.value for row in rows) >= 2

        run_nodes_until(runtime, two_ran, timeout=15, nodes=2, cron_interval=0.2)
        keys = [row["idempotency_key"] for row in scheduled_tasks(runtime, "minutely")]
        assert len(keys) == len(set(keys))  # two nodes, still one task per tick
    finally:
        runtime.close()


def test_a_paused_schedule_fires_nothing_and_does_not_catch_up_when_resumed(rt: Runtime) -> None:
    from execution_ledger.domain.errors import InvalidTransition, UnknownSchedule

    clock = Clock(T0)
    scheduler(rt, clock).run_once()
    rt.ledger.pause_schedule("minutely", by="ops")
    clock.now = T0 + timedelta(minutes=3)
    assert [f for f in scheduler(rt, clock).run_once() if f.schedule == "minutely"] == []
    rt.ledger.resume_schedule("minutely", by="ops")
    clock.now = T0 + timedelta(minutes=4)
    fired = [f for f in scheduler(rt, clock).run_once() if f.schedule == "minutely"]
    assert [f.tick for f in fired] == [datetime(2026, 3, 1, 12, 4, tzinfo=UTC)]
    with pytest.raises(InvalidTransition, match="is not paused"):
        rt.ledger.resume_schedule("minutely")
    with pytest.raises(UnknownSchedule, match="unknown schedule 'nope'"):
        rt.ledger.pause_schedule("nope")
    names = [
        type(e.event).__name__
        for e in rt.store.history(rt.store.load_schedule_control("minutely").id)
    ]
    assert names == ["ScheduleRegistered", "SchedulePaused", "ScheduleResumed"]


def test_a_schedule_paused_in_the_config_starts_paused(ledger_env: None, tmp_path: Path) -> None:
    runtime = runtime_with_config(tmp_path, CONFIG)
    try:
        assert runtime.store.load_schedule_control("off").paused
        assert not runtime.store.load_schedule_control("minutely").paused
    finally:
        runtime.close()
