"""Overlap policies and backfills on a real PostgreSQL: a tick whose schedule's last run is
still queued or running is skipped (and counted), queued once (in the schedule's lane, so it
waits for the running one), or allowed; a backfill enqueues each tick of a range once."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.postgres.dispatch import PostgresDispatch
from execution_ledger.adapters.postgres.schedule_clock import PostgresScheduleClock
from execution_ledger.adapters.postgres.schedule_runs import PostgresScheduleRuns
from execution_ledger.adapters.postgres.schedule_tables import PostgresScheduleBook
from execution_ledger.adapters.postgres.task_queries import TaskFilter, list_tasks
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.adapters.schedules import Schedules
from execution_ledger.domain.errors import InvalidSchedule, UnknownSchedule
from execution_ledger.domain.schedule_definitions import MAX_BACKFILL_TICKS
from execution_ledger.domain.submission import Requester
from execution_ledger.processors.cron import CronScheduler, Fired
from tests.helpers import start
from tests.processors.worker_harness import runtime_with_config

CONFIG = textwrap.dedent(
    """
    [task_types.beat]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }

    [schedules.file-skip]
    cron = "* * * * *"
    task_type = "beat"
    overlap = "skip"

    [schedules.file-allow]
    cron = "* * * * *"
    task_type = "beat"
    """
)
T0 = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
OPS = Requester(principal="ops", role="admin")


@pytest.fixture
def rt(ledger_env: None, tmp_path: Path) -> Iterator[Runtime]:
    runtime = runtime_with_config(tmp_path, CONFIG)
    yield runtime
    runtime.close()


class Ticking:
    """One node's scheduler on a clock that moves a minute per ``tick()``."""

    def __init__(self, rt: Runtime) -> None:
        self.now = T0
        registry = rt.settings.config.registry
        self.scheduler = CronScheduler(
            registry.schedules,
            PostgresScheduleClock(rt.store),
            rt.ledger,
            lambda: self.now,
            book=PostgresScheduleBook(rt.store, lambda: registry.task_types),
            guard=PostgresScheduleRuns(rt.store, rt.ledger),
        )
        self.scheduler.run_once()  # first sight of every schedule

    def tick(self, name: str) -> Fired:
        self.now += timedelta(minutes=1)
        (fired,) = [f for f in self.scheduler.run_once() if f.schedule == name]
        return fired


def tasks_of(rt: Runtime, name: str) -> list[dict[str, object]]:
    rt.catch_up()
    return list_tasks(rt.store, TaskFilter(tag=f"schedule:{name}"), limit=200).rows


def test_skip_enqueues_nothing_while_the_last_run_is_queued_or_running(rt: Runtime) -> None:
    Schedules(rt.ledger).define(
        "rt-skip", {"cron": "* * * * *", "task_type": "beat", "overlap": "skip"}, OPS
    )
    node = Ticking(rt)
    assert node.tick("rt-skip").created  # 12:01; the pass fires file-skip's 12:01 too
    first_ids = {name: tasks_of(rt, name)[0]["task_id"] for name in ("rt-skip", "file-skip")}
    queued = node.tick("rt-skip")  # 12:02: the 12:01 run is still queued
    assert queued.skipped and queued.task_id is None and not queued.created
    attempts = {task_id: start(rt.store, task_id) for task_id in first_ids.values()}  # type: ignore[arg-type]
    running = node.tick("rt-skip")  # 12:03: it is running
    assert running.skipped
    for task_id, attempt in attempts.items():
        task = rt.store.load(task_id)  # type: ignore[arg-type]
        task.succeed(attempt, {"ok": True})
        rt.store.save(task)
    ended = node.tick("rt-skip")  # 12:04: it ended
    assert ended.created and not ended.skipped
    for name in ("rt-skip", "file-skip"):
        assert len(tasks_of(rt, name)) == 2
        view = Schedules(rt.ledger).get(name)
        assert view.runs.skipped_ticks == 2
        assert view.runs.last_skipped_tick == datetime(2026, 3, 1, 12, 3, tzinfo=UTC)
        assert view.schedule.overlap.value == "skip"


def test_allow_enqueues_every_tick_whatever_the_last_run_does(rt: Runtime) -> None:
    node = Ticking(rt)
    node.tick("file-allow")
    node.tick("file-allow")
    assert [row["state"] for row in tasks_of(rt, "file-allow")] == ["ready", "ready"]
    assert Schedules(rt.ledger).get("file-allow").runs.skipped_ticks == 0


def test_queue_one_keeps_one_run_waiting_behind_the_running_one(rt: Runtime) -> None:
    Schedules(rt.ledger).define(
        "one", {"cron": "* * * * *", "task_type": "beat", "overlap": "queue_one"}, OPS
    )
    node = Ticking(rt)
    dispatch = PostgresDispatch(rt.store, rt.settings.config.registry, clock=utc_now)
    first = node.tick("one")
    assert first.created
    assert node.tick("one").skipped  # the first run has not started: it is the one waiting
    (claimed,) = [c for c in dispatch.claim(["default"], 10, "w1") if c.task_id == first.task_id]
    second = node.tick("one")  # the first runs: one more may wait
    assert second.created
    assert node.tick("one").skipped  # one waits already
    rt.catch_up()
    rows = {row["task_id"]: row for row in tasks_of(rt, "one")}
    assert {row["lane"] for row in rows.values()} == {"schedule:one"}
    claims = [c.task_id for c in dispatch.claim(["default"], 10, "w1")]
    assert second.task_id not in claims  # it waits for the running one
    rt.ledger.cancel(claimed.task_id, by="ops")
    claims = [c.task_id for c in dispatch.claim(["default"], 10, "w1")]
    assert [task_id for task_id in claims if task_id in rows] == [second.task_id]
    assert Schedules(rt.ledger).get("one").runs.skipped_ticks == 2


def test_a_backfill_enqueues_each_tick_of_the_range_once(rt: Runtime) -> None:
    schedules = Schedules(rt.ledger)
    schedules.define("hourly", {"cron": "0 * * * *", "task_type": "beat"}, OPS)
    since, until = datetime(2026, 2, 1, 0, 0, tzinfo=UTC), datetime(2026, 2, 1, 5, 0, tzinfo=UTC)
    dry = schedules.backfill("hourly", since, until, OPS, dry_run=True)
    assert (dry.ticks, dry.enqueued, dry.existing, dry.dry_run) == (6, 0, 0, True)
    assert tasks_of(rt, "hourly") == []
    done = schedules.backfill("hourly", since, until, OPS)
    assert (done.ticks, done.enqueued, done.existing) == (6, 6, 0)
    rows = tasks_of(rt, "hourly")
    assert len(rows) == 6 and all("backfill" in row["tags"] for row in rows)  # type: ignore[operator]
    assert f"schedule:hourly:{since.isoformat()}" in {row["idempotency_key"] for row in rows}
    wider = schedules.backfill("hourly", since, until + timedelta(hours=2), OPS)
    assert (wider.ticks, wider.enqueued, wider.existing) == (8, 2, 6)
    again = schedules.backfill("hourly", since, until, OPS)
    assert (again.enqueued, again.existing) == (0, 6)
    assert schedules.backfill("hourly", since, until, OPS, dry_run=True).existing == 6
    assert len(tasks_of(rt, "hourly")) == 8
    control = rt.store.load_schedule_control("hourly")
    backfills = [e.event for e in rt.store.history(control.id)][2:]
    assert [(e.ticks, e.enqueued, e.by) for e in backfills] == [  # type: ignore[attr-defined]
        (6, 6, "ops"),
        (8, 2, "ops"),
        (6, 0, "ops"),
    ]
    # A file schedule backfills too; the scheduler then finds its tick taken.
    file_range = schedules.backfill(
        "file-allow", T0 - timedelta(minutes=2), T0 + timedelta(minutes=1), OPS
    )
    assert file_range.enqueued == 3  # 11:59, 12:00, 12:01
    node = Ticking(rt)
    fired = node.tick("file-allow")
    assert fired.tick == datetime(2026, 3, 1, 12, 1, tzinfo=UTC) and not fired.created


def test_backfills_out_of_bounds_are_refused_and_enqueue_nothing(rt: Runtime) -> None:
    schedules = Schedules(rt.ledger)
    schedules.define("each-minute", {"cron": "* * * * *", "task_type": "beat"}, OPS)
    since = datetime(2026, 2, 1, tzinfo=UTC)
    too_long = since + timedelta(minutes=MAX_BACKFILL_TICKS)  # one tick more than allowed
    with pytest.raises(InvalidSchedule, match=f"more than {MAX_BACKFILL_TICKS} ticks"):
        schedules.backfill("each-minute", since, too_long, OPS)
    with pytest.raises(InvalidSchedule, match="more than"):
        schedules.backfill("each-minute", since, too_long, OPS, dry_run=True)
    at_bound = schedules.backfill("each-minute", since, too_long - timedelta(minutes=1), OPS, True)
    assert at_bound.ticks == MAX_BACKFILL_TICKS
    with pytest.raises(InvalidSchedule, match="ends before it starts"):
        schedules.backfill("each-minute", since, since - timedelta(minutes=1), OPS)
    with pytest.raises(InvalidSchedule, match="time zone"):
        schedules.backfill("each-minute", since.replace(tzinfo=None), since, OPS)
    with pytest.raises(UnknownSchedule):
        schedules.backfill("nope", since, since, OPS)
    assert tasks_of(rt, "each-minute") == []
    events = [e.event for e in rt.store.history(rt.store.load_schedule_control("each-minute").id)]
    assert [type(e).__name__ for e in events] == ["ScheduleRegistered", "ScheduleDefined"]
