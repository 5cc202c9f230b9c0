"""Cron schedules: due ticks, catch-up rules, time zones and configuration errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.registry import build_registry
from execution_ledger.domain.schedules import CatchUp, Schedule

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def every_minute(catch_up: CatchUp = CatchUp.NONE, **fields: object) -> Schedule:
    return Schedule("s", "* * * * *", "echo", catch_up=catch_up, **fields)  # type: ignore[arg-type]


def test_a_tick_that_just_passed_fires_once() -> None:
    assert every_minute().due_ticks(T0, T0 + timedelta(seconds=61)) == [T0 + timedelta(minutes=1)]
    assert every_minute().due_ticks(T0 + timedelta(seconds=61), T0 + timedelta(seconds=90)) == []


def test_with_catch_up_none_ticks_missed_beyond_the_grace_are_dropped() -> None:
    ticks = every_minute().due_ticks(T0, T0 + timedelta(minutes=10, seconds=10))
    assert ticks == [T0 + timedelta(minutes=10)]


def test_with_catch_up_latest_only_the_most_recent_missed_tick_fires() -> None:
    ticks = every_minute(CatchUp.LATEST).due_ticks(T0, T0 + timedelta(minutes=10, seconds=50))
    assert ticks == [T0 + timedelta(minutes=10)]


def test_with_catch_up_all_every_missed_tick_fires_up_to_the_bound() -> None:
    now = T0 + timedelta(minutes=30)
    assert len(every_minute(CatchUp.ALL).due_ticks(T0, now)) == 10
    ticks = every_minute(CatchUp.ALL, max_catch_up=50).due_ticks(T0, now)
    assert ticks == [T0 + timedelta(minutes=m) for m in range(1, 31)]


def test_ticks_follow_the_schedules_time_zone() -> None:
    nine_in_paris = Schedule("s", "0 9 * * *", "echo", timezone="Europe/Paris")
    assert nine_in_paris.next_fire(T0) == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # UTC+1 in March
    assert nine_in_paris.next_fire(datetime(2026, 7, 1, tzinfo=UTC)) == datetime(
        2026, 7, 1, 7, 0, tzinfo=UTC
    )


def test_the_idempotency_key_names_the_schedule_and_the_tick_in_utc() -> None:
    tick = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert every_minute().idempotency_key(tick) == "schedule:s:2026-03-02T09:00:00+00:00"


def config(**schedule: object) -> dict[str, object]:
    return {
        "task_types": {
            "echo": {
                "adapter": "python",
                "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
            }
        },
        "schedules": {"nightly": {"cron": "0 3 * * *", "task_type": "echo", **schedule}},
    }


def test_a_schedule_is_read_from_the_configuration() -> None:
    schedule = build_registry(
        config(timezone="Europe/Paris", catch_up="all", max_catch_up=3, args={"n": 1})
    ).schedules["nightly"]
    assert (schedule.timezone, schedule.catch_up, schedule.max_catch_up, dict(schedule.args)) == (
        "Europe/Paris",
        CatchUp.ALL,
        3,
        {"n": 1},
    )


@pytest.mark.parametrize(
    ("fields", "message", "key"),
    [
        ({"cron": "every day"}, "not a valid cron expression", "cron"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone", "timezone"),
        ({"task_type": "nope"}, "unknown task type 'nope'", "task_type"),
        ({"task_type": ["echo"]}, r"unknown task type \['echo'\]", "task_type"),
        ({"catch_up": "some"}, "catch_up must be one of", "catch_up"),
        ({"max_catch_up": 0}, "max_catch_up must be an integer", "max_catch_up"),
        ({"args": {"n": "one"}}, "args do not match the schema", "args"),
        ({"when": "now"}, "unknown key 'when'", "when"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_key(
    fields: dict[str, object], message: str, key: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_registry(config(**fields))
    assert caught.value.where == ("schedules", "nightly", key)
