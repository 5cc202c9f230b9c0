"""Run-time schedules on a real PostgreSQL: defined, updated, paused and deleted as events,
picked up by every scheduler at its next pass (a clock the test controls), each tick still
enqueued once whatever the number of schedulers; bad definitions and rights refused with
nothing recorded."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from execution_ledger.adapters.postgres.schedule_clock import PostgresScheduleClock
from execution_ledger.adapters.postgres.schedule_runs import PostgresScheduleRuns
from execution_ledger.adapters.postgres.schedule_tables import PostgresScheduleBook
from execution_ledger.adapters.postgres.task_queries import TaskFilter, list_tasks
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.adapters.schedules import Schedules
from execution_ledger.domain.errors import (
    Forbidden,
    InvalidSchedule,
    InvalidTransition,
    UnknownSchedule,
)
from execution_ledger.domain.submission import Requester
from execution_ledger.processors.cron import CronScheduler, Fired
from tests.processors.worker_harness import run_nodes_until, runtime_with_config

CONFIG = textwrap.dedent(
    """
    [task_types.beat]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
    schema = { type = "object", properties = { n = { type = "integer" } } }

    [task_types.secret]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
    roles = ["admin"]

    [roles.scheduler]
    may_schedule = true

    [schedules.nightly]
    cron = "0 3 * * *"
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


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def scheduler(rt: Runtime, clock: Clock) -> CronScheduler:
    """One node's scheduler, wired as ``WorkerNode`` wires it."""
    registry = rt.settings.config.registry
    return CronScheduler(
        registry.schedules,
        PostgresScheduleClock(rt.store),
        rt.ledger,
        clock,
        book=PostgresScheduleBook(rt.store, lambda: registry.task_types),
        guard=PostgresScheduleRuns(rt.store, rt.ledger),
    )


def created(fired: list[Fired], name: str) -> list[datetime]:
    return [f.tick for f in fired if f.schedule == name and f.created]


def scheduled_tasks(rt: Runtime, name: str) -> list[dict[str, object]]:
    rt.catch_up()
    return list_tasks(rt.store, TaskFilter(tag=f"schedule:{name}"), limit=200).rows


def event_names(rt: Runtime, name: str) -> list[str]:
    control = rt.store.load_schedule_control(name)
    return [type(e.event).__name__ for e in rt.store.history(control.id)]


def minute(m: int) -> datetime:
    return datetime(2026, 3, 1, 12, m, tzinfo=UTC)


def test_a_created_schedule_fires_from_the_next_pass_of_a_running_scheduler(
    rt: Runtime,
) -> None:
    clock = Clock(T0)
    node = scheduler(rt, clock)
    node.run_once()  # running before the schedule exists
    view = Schedules(rt.ledger).define(
        "every-minute",
        {"cron": "* * * * *", "task_type": "beat", "args": {"n": 7}, "catch_up": "all"},
        OPS,
    )
    assert (view.source, view.schedule.overlap.value, view.paused) == ("runtime", "allow", False)
    assert node.run_once() == []  # first sight: nothing before it existed
    clock.now = T0 + timedelta(minutes=2)
    assert created(node.run_once(), "every-minute") == [minute(1), minute(2)]
    rows = scheduled_tasks(rt, "every-minute")
    assert sorted(r["idempotency_key"] for r in rows) == [  # type: ignore[type-var]
        f"schedule:every-minute:{minute(1).isoformat()}",
        f"schedule:every-minute:{minute(2).isoformat()}",
    ]
    assert all(r["args"] == {"n": 7} for r in rows)
    assert event_names(rt, "every-minute") == ["ScheduleRegistered", "ScheduleDefined"]
    control = rt.store.load_schedule_control("every-minute")
    defined = rt.store.history(control.id)[1].event
    assert defined.by == "ops"  # type: ignore[attr-defined]
    assert defined.definition["cron"] == "* * * * *"  # type: ignore[attr-defined]


def test_an_update_changes_the_next_ticks_and_records_what_changed(rt: Runtime) -> None:
    clock = Clock(T0)
    node = scheduler(rt, clock)
    schedules = Schedules(rt.ledger)
    schedules.define("changing", {"cron": "* * * * *", "task_type": "beat"}, OPS)
    node.run_once()
    view, changes = schedules.update("changing", {"cron": "*/5 * * * *", "args": {"n": 1}}, OPS)
    assert changes == {"args": [{}, {"n": 1}], "cron": ["* * * * *", "*/5 * * * *"]}
    assert view.schedule.cron == "*/5 * * * *"
    clock.now = T0 + timedelta(minutes=10)
    schedules.update("changing", {"catch_up": "all"}, OPS)
    assert created(node.run_once(), "changing") == [minute(5), minute(10)]
    assert all(r["args"] == {"n": 1} for r in scheduled_tasks(rt, "changing"))
    # The same values again: nothing changes, nothing is recorded.
    assert schedules.update("changing", {"cron": "*/5 * * * *"}, OPS)[1] == {}
    assert event_names(rt, "changing") == [
        "ScheduleRegistered",
        "ScheduleDefined",
        "ScheduleUpdated",
        "ScheduleUpdated",
    ]


def test_a_deleted_schedule_fires_no_more_and_its_name_can_be_defined_again(
    rt: Runtime,
) -> None:
    clock = Clock(T0)
    node = scheduler(rt, clock)
    schedules = Schedules(rt.ledger)
    schedules.define("gone", {"cron": "* * * * *", "task_type": "beat"}, OPS)
    node.run_once()
    clock.now = T0 + timedelta(minutes=1)
    assert created(node.run_once(), "gone") == [minute(1)]
    schedules.delete("gone", OPS)
    clock.now = T0 + timedelta(minutes=3)
    assert node.run_once() == []
    assert [v.schedule.name for v in schedules.all()] == ["nightly"]
    with pytest.raises(UnknownSchedule):
        schedules.delete("gone", OPS)
    with pytest.raises(UnknownSchedule):
        schedules.update("gone", {"cron": "0 * * * *"}, OPS)
    # Defined again: a fresh start (nothing of the deleted time is caught up).
    schedules.define("gone", {"cron": "* * * * *", "task_type": "beat", "catch_up": "all"}, OPS)
    assert node.run_once() == []
    clock.now = T0 + timedelta(minutes=4)
    assert created(node.run_once(), "gone") == [minute(4)]
    assert event_names(rt, "gone") == [
        "ScheduleRegistered",
        "ScheduleDefined",
        "ScheduleDeleted",
        "ScheduleDefined",
    ]


def test_a_run_time_schedule_pauses_and_resumes_like_a_file_schedule(rt: Runtime) -> None:
    clock = Clock(T0)
    node = scheduler(rt, clock)
    schedules = Schedules(rt.ledger)
    schedules.define("switch", {"cron": "* * * * *", "task_type": "beat"}, OPS)
    node.run_once()
    assert schedules.pause("switch", OPS).paused
    clock.now = T0 + timedelta(minutes=2)
    assert created(node.run_once(), "switch") == []
    assert not schedules.resume("switch", OPS).paused
    clock.now = T0 + timedelta(minutes=3)
    assert created(node.run_once(), "switch") == [minute(3)]
    with pytest.raises(InvalidTransition, match="is not paused"):
        schedules.resume("switch", OPS)
    assert event_names(rt, "switch")[-2:] == ["SchedulePaused", "ScheduleResumed"]


def test_a_schedule_defined_paused_fires_nothing_until_resumed(rt: Runtime) -> None:
    clock = Clock(T0)
    node = scheduler(rt, clock)
    schedules = Schedules(rt.ledger)
    view = schedules.define(
        "later", {"cron": "* * * * *", "task_type": "beat", "paused": True}, OPS
    )
    assert view.paused
    node.run_once()
    clock.now = T0 + timedelta(minutes=2)
    assert node.run_once() == []
    assert event_names(rt, "later") == ["ScheduleRegistered", "ScheduleDefined", "SchedulePaused"]


def test_two_schedulers_enqueue_each_tick_of_a_run_time_schedule_once(rt: Runtime) -> None:
    clock = Clock(T0)
    Schedules(rt.ledger).define("raced", {"cron": "* * * * *", "task_type": "beat"}, OPS)
    Schedules(rt.ledger).define(
        "raced-skip", {"cron": "* * * * *", "task_type": "beat", "overlap": "skip"}, OPS
    )
    nodes = [scheduler(rt, clock), scheduler(rt, clock)]
    nodes[0].run_once()
    clock.now = T0 + timedelta(minutes=1)
    barrier = threading.Barrier(len(nodes))
    results: list[list[Fired]] = []

    def race(node: CronScheduler) -> None:
        barrier.wait()
        results.append(node.run_once())

    threads = [threading.Thread(target=race, args=(n,)) for n in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fired = [f for batch in results for f in batch]
    for name in ("raced", "raced-skip"):
        assert len(scheduled_tasks(rt, name)) == 1
        assert [f.tick for f in fired if f.schedule == name and f.created] == [minute(1)]


def test_bad_definitions_are_refused_and_nothing_is_recorded(rt: Runtime) -> None:
    schedules = Schedules(rt.ledger)
    refusals = [
        ({"cron": "every minute", "task_type": "beat"}, "cron: not a valid cron expression"),
        ({"cron": "* * * * *", "task_type": "nope"}, "task_type: unknown task type 'nope'"),
        (
            {"cron": "* * * * *", "task_type": "beat", "timezone": "Mars/Olympus"},
            "timezone: unknown time zone",
        ),
        ({"cron": "* * * * *", "task_type": "beat", "args": {"n": "x"}}, "args do not match"),
        ({"cron": "* * * * *", "task_type": "beat", "overlap": "never"}, "overlap must be one"),
        ({"cron": "* * * * *", "task_type": "beat", "color": "red"}, "unknown key 'color'"),
        ({"cron": "* * * * *", "task_type": "beat", "paused": "yes"}, "paused"),
    ]
    for spec, message in refusals:
        with pytest.raises(InvalidSchedule, match=message):
            schedules.define("bad", spec, OPS)
    with pytest.raises(InvalidSchedule, match="schedule name"):
        schedules.define("no spaces", {"cron": "* * * * *", "task_type": "beat"}, OPS)
    with pytest.raises(InvalidTransition, match="registry file"):
        schedules.define("nightly", {"cron": "* * * * *", "task_type": "beat"}, OPS)
    schedules.define("good", {"cron": "* * * * *", "task_type": "beat"}, OPS)
    with pytest.raises(InvalidTransition, match="already exists"):
        schedules.define("good", {"cron": "0 * * * *", "task_type": "beat"}, OPS)
    with pytest.raises(InvalidSchedule, match="cron"):
        schedules.update("good", {"cron": "61 * * * *"}, OPS)
    with pytest.raises(InvalidTransition, match="changed there"):
        schedules.update("nightly", {"cron": "0 4 * * *"}, OPS)
    with pytest.raises(InvalidTransition, match="deleted there"):
        schedules.delete("nightly", OPS)
    assert event_names(rt, "bad") == []  # no aggregate stored
    assert event_names(rt, "good") == ["ScheduleRegistered", "ScheduleDefined"]
    assert [v.schedule.name for v in schedules.all()] == ["good", "nightly"]
    assert schedules.get("good").schedule.cron == "* * * * *"


def test_roles_without_the_right_are_refused_and_nothing_is_recorded(rt: Runtime) -> None:
    schedules = Schedules(rt.ledger)
    coder = Requester(principal="carol", role="coder")
    spec = {"cron": "* * * * *", "task_type": "beat"}
    with pytest.raises(Forbidden, match="may not manage schedules"):
        schedules.define("mine", spec, coder)
    schedules.define("shared", spec, OPS)
    for action in (
        lambda: schedules.update("shared", {"cron": "0 * * * *"}, coder),
        lambda: schedules.delete("shared", coder),
        lambda: schedules.pause("shared", coder),
        lambda: schedules.backfill("shared", T0, T0 + timedelta(minutes=1), coder),
    ):
        with pytest.raises(Forbidden):
            action()
    # A role with may_schedule may manage them, for the types it may enqueue.
    planner = Requester(principal="pat", role="scheduler")
    schedules.define("planned", spec, planner)
    with pytest.raises(Forbidden, match="may not enqueue tasks of type 'secret'"):
        schedules.define("hidden", {"cron": "* * * * *", "task_type": "secret"}, planner)
    with pytest.raises(Forbidden, match="'secret'"):
        schedules.update("planned", {"task_type": "secret"}, planner)
    assert event_names(rt, "mine") == [] and event_names(rt, "hidden") == []
    assert event_names(rt, "shared") == ["ScheduleRegistered", "ScheduleDefined"]
    assert schedules.get("planned").schedule.task_type == "beat"


def test_running_nodes_pick_up_a_schedule_defined_after_they_started(rt: Runtime) -> None:
    defined = threading.Event()

    def two_ran() -> bool:
        if not defined.is_set():  # the nodes are running: define it now
            Schedules(rt.ledger).define(
                "every-second", {"cron": "* * * * * *", "task_type": "beat"}, OPS
            )
            defined.set()
            return False
        rows = scheduled_tasks(rt, "every-second")
        return sum(row["state"] == "succeeded" for row in rows) >= 2

    run_nodes_until(rt, two_ran, timeout=20, nodes=2, cron_interval=0.2)
    keys = [row["idempotency_key"] for row in scheduled_tasks(rt, "every-second")]
    assert len(keys) == len(set(keys))  # two nodes, one task per tick
