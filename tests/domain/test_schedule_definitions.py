"""The pure rules of run-time schedules and overlap: definitions checked like the file's
tables, what an overlap policy lets a tick do, the task a tick enqueues, who may manage
schedules, and the ScheduleControl aggregate's run-time life cycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from execution_ledger.domain.errors import (
    ConfigError,
    Forbidden,
    InvalidSchedule,
    InvalidTransition,
    UnknownSchedule,
)
from execution_ledger.domain.registry import build_registry
from execution_ledger.domain.schedule_control import ScheduleControl
from execution_ledger.domain.schedule_definitions import (
    check_backfill_range,
    check_schedule_rights,
    checked_definition,
    overlap_allows,
    tick_request,
    updated_definition,
)
from execution_ledger.domain.schedules import Overlap, Schedule, build_schedule
from execution_ledger.domain.submission import Requester
from execution_ledger.domain.task import TaskState

REGISTRY = build_registry(
    {
        "task_types": {
            "beat": {"adapter": "python", "settings": {"callable": "m:f"}},
            "secret": {"adapter": "python", "settings": {"callable": "m:f"}, "roles": ["admin"]},
        },
        "roles": {"planner": {"may_schedule": True}},
    }
)
TICK = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)


def test_a_definition_is_completed_with_the_defaults_of_a_file_schedule() -> None:
    definition = checked_definition(
        "s", {"cron": "*/5 * * * *", "task_type": "beat"}, REGISTRY.task_types
    )
    assert definition == {
        "cron": "*/5 * * * *",
        "timezone": "UTC",
        "task_type": "beat",
        "args": {},
        "catch_up": "none",
        "max_catch_up": 10,
        "overlap": "allow",
    }


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        ("s", {"cron": "* * *", "task_type": "beat"}, "cron: not a valid cron expression"),
        ("s", {"cron": "* * * * *", "task_type": 3}, "task_type: unknown task type 3"),
        ("s", {"cron": "* * * * *", "task_type": "beat", "catch_up": ["all"]}, "catch_up"),
        ("s", {"cron": "* * * * *", "task_type": "beat", "overlap": None}, "overlap"),
        ("s", {"cron": "* * * * *", "task_type": "beat", "paused": True}, "unknown key 'paused'"),
        ("s", ["cron"], "must be a JSON object"),
        ("two words", {"cron": "* * * * *", "task_type": "beat"}, "schedule name"),
    ],
)
def test_a_bad_definition_is_refused_naming_the_key(name: str, spec: object, message: str) -> None:
    with pytest.raises(InvalidSchedule, match=message):
        checked_definition(name, spec, REGISTRY.task_types)


def test_a_file_schedule_takes_an_overlap_policy_and_refuses_a_bad_one() -> None:
    spec = {"cron": "* * * * *", "task_type": "beat", "overlap": "queue_one"}
    assert build_schedule("s", spec, ("schedules", "s"), REGISTRY.task_types).overlap is (
        Overlap.QUEUE_ONE
    )
    with pytest.raises(ConfigError, match="overlap must be one of: allow, skip, queue_one"):
        build_schedule("s", {**spec, "overlap": "never"}, ("schedules", "s"), REGISTRY.task_types)


def test_an_update_replaces_the_keys_given_and_needs_one() -> None:
    current = {"cron": "* * * * *", "args": {"a": 1, "b": 2}}
    assert updated_definition(current, {"args": {"c": 3}}) == {
        "cron": "* * * * *",
        "args": {"c": 3},
    }
    with pytest.raises(InvalidSchedule, match="at least one key"):
        updated_definition(current, {})


@pytest.mark.parametrize(
    ("overlap", "previous", "allowed"),
    [
        (Overlap.ALLOW, TaskState.RUNNING, True),
        (Overlap.ALLOW, TaskState.READY, True),
        (Overlap.SKIP, None, True),
        (Overlap.SKIP, TaskState.SUCCEEDED, True),
        (Overlap.SKIP, TaskState.FAILED, True),
        (Overlap.SKIP, TaskState.READY, False),
        (Overlap.SKIP, TaskState.SCHEDULED, False),
        (Overlap.SKIP, TaskState.RUNNING, False),
        (Overlap.SKIP, TaskState.WAITING, False),
        (Overlap.QUEUE_ONE, TaskState.RUNNING, True),
        (Overlap.QUEUE_ONE, TaskState.WAITING, True),
        (Overlap.QUEUE_ONE, TaskState.CANCELLED, True),
        (Overlap.QUEUE_ONE, TaskState.READY, False),
        (Overlap.QUEUE_ONE, TaskState.BLOCKED, False),
    ],
)
def test_what_each_overlap_policy_lets_a_tick_do(
    overlap: Overlap, previous: TaskState | None, allowed: bool
) -> None:
    assert overlap_allows(overlap, previous) is allowed


def test_a_ticks_task_is_keyed_tagged_and_for_queue_one_in_the_schedules_lane() -> None:
    plain = Schedule("s", "*/5 * * * *", "beat", args={"a": 1})
    request = tick_request(plain, TICK)
    assert request.idempotency_key == "schedule:s:2026-03-01T12:05:00+00:00"
    assert (request.tags, request.lane, request.args) == (("schedule:s",), None, {"a": 1})
    one = Schedule("s", "*/5 * * * *", "beat", overlap=Overlap.QUEUE_ONE)
    backfilled = tick_request(one, TICK, backfill=True)
    assert (backfilled.tags, backfilled.lane) == (("schedule:s", "backfill"), "schedule:s")


def test_the_ticks_of_a_range_include_both_ends_and_stop_past_the_bound() -> None:
    schedule = Schedule("s", "*/5 * * * *", "beat")
    since = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert schedule.ticks_between(since, since + timedelta(minutes=10), 100) == [
        since,
        since + timedelta(minutes=5),
        since + timedelta(minutes=10),
    ]
    assert len(schedule.ticks_between(since, since + timedelta(days=1), 3)) == 4
    with pytest.raises(InvalidSchedule, match="ends before it starts"):
        check_backfill_range(since, since - timedelta(seconds=1))


def test_admin_and_may_schedule_roles_manage_schedules_for_types_they_may_enqueue() -> None:
    check_schedule_rights(REGISTRY, Requester("a", "admin"), "secret")
    check_schedule_rights(REGISTRY, Requester("p", "planner"), "beat")
    with pytest.raises(Forbidden, match="may not enqueue tasks of type 'secret'"):
        check_schedule_rights(REGISTRY, Requester("p", "planner"), "secret")
    with pytest.raises(Forbidden, match="role 'coder' may not manage schedules"):
        check_schedule_rights(REGISTRY, Requester("c", "coder"))
    with pytest.raises(Forbidden, match="unknown role"):
        check_schedule_rights(REGISTRY, Requester("x", "nobody"))


def test_the_aggregate_defines_updates_and_deletes_a_run_time_schedule() -> None:
    control = ScheduleControl.register("s")
    with pytest.raises(UnknownSchedule):
        control.update({"cron": "* * * * *"}, by="ops")
    control.define({"cron": "* * * * *", "args": {}}, by="ops")
    with pytest.raises(InvalidTransition, match="already exists"):
        control.define({"cron": "* * * * *"}, by="ops")
    assert control.update({"cron": "0 * * * *", "args": {}}, by="ops") == {
        "cron": ["* * * * *", "0 * * * *"]
    }
    assert control.update({"cron": "0 * * * *", "args": {}}, by="ops") == {}
    control.pause(by="ops")
    control.delete(by="ops")
    assert (control.definition, control.paused) == (None, False)
    names = [type(e).__name__ for e in control.collect_events()]
    assert names == [
        "ScheduleRegistered",
        "ScheduleDefined",
        "ScheduleUpdated",
        "SchedulePaused",
        "ScheduleDeleted",
    ]
