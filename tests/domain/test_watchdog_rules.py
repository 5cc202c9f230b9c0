"""What the watchdog decides, without a database: a task found by several timeouts keeps
its broadest, and a fired timeout is recorded only while it still holds for the task as
loaded (its attempt still runs, the task has not ended, started or got its signal)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest

from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import Task, TaskState
from execution_ledger.domain.timeouts import TimeoutKind
from execution_ledger.domain.watchdog import (
    BROADEST_FIRST,
    FiredTimeout,
    TimeoutRecorded,
    one_per_task,
    record_fired,
)
from tests.domain.test_task_lifecycle import events_of, task_in
from tests.domain.test_worker_round import planned

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
K = TimeoutKind
A, B = UUID(int=1), UUID(int=2)


def half() -> float:
    return 0.5


def test_every_kind_is_looked_for_once_broadest_first() -> None:
    assert sorted(BROADEST_FIRST) == sorted(TimeoutKind)
    assert BROADEST_FIRST[0] is K.SIGNAL_WAIT and BROADEST_FIRST[-1] is K.HEARTBEAT


def test_a_task_found_by_several_kinds_keeps_the_first_found() -> None:
    found = [
        FiredTimeout(A, K.SCHEDULE_TO_CLOSE, None),
        FiredTimeout(B, K.START_TO_CLOSE, 1),
        FiredTimeout(A, K.HEARTBEAT, 1),
        FiredTimeout(B, K.HEARTBEAT, 1),
    ]
    assert one_per_task(found) == found[:2]


def test_a_lapsed_heartbeat_times_the_running_attempt_out_and_stops_it() -> None:
    task = task_in("running")
    recorded = record_fired(task, FiredTimeout(task.id, K.HEARTBEAT, 1), NOW, half)
    assert recorded == TimeoutRecorded(stopped_attempt=True)
    assert events_of(task) == ["TaskTimedOut", "TaskRetryScheduled"]  # attempt 1 of 2


def test_a_timeout_of_an_attempt_that_already_ended_records_nothing() -> None:
    running = task_in("running")
    assert record_fired(running, FiredTimeout(running.id, K.HEARTBEAT, 2), NOW, half) is None
    succeeded = task_in("succeeded")
    assert record_fired(succeeded, FiredTimeout(succeeded.id, K.HEARTBEAT, 1), NOW, half) is None
    assert events_of(running) == [] and events_of(succeeded) == []


@pytest.mark.parametrize("state", ["succeeded", "failed", "cancelled", "skipped"])
def test_a_task_that_ended_meanwhile_is_not_timed_out(state: str) -> None:
    task = task_in(state)
    assert record_fired(task, FiredTimeout(task.id, K.SCHEDULE_TO_CLOSE, None), NOW, half) is None
    assert events_of(task) == []


def test_schedule_to_close_ends_a_running_task_for_good_and_stops_its_attempt() -> None:
    task = task_in("running")
    recorded = record_fired(task, FiredTimeout(task.id, K.SCHEDULE_TO_CLOSE, None), NOW, half)
    assert recorded == TimeoutRecorded(stopped_attempt=True)
    assert events_of(task) == ["TaskTimedOut"]  # final: never retried
    assert task.state is TaskState.FAILED


@pytest.mark.parametrize("state", ["ready", "scheduled"])
def test_schedule_to_start_fails_a_task_still_waiting_to_start(state: str) -> None:
    task = task_in(state)
    recorded = record_fired(task, FiredTimeout(task.id, K.SCHEDULE_TO_START, None), NOW, half)
    assert recorded == TimeoutRecorded(stopped_attempt=False)
    assert events_of(task) == ["TaskTimedOut"]


@pytest.mark.parametrize("state", ["running", "blocked", "waiting"])
def test_schedule_to_start_no_longer_holds_once_the_task_is_past_waiting_to_start(
    state: str,
) -> None:
    task = task_in(state)
    assert record_fired(task, FiredTimeout(task.id, K.SCHEDULE_TO_START, None), NOW, half) is None
    assert events_of(task) == []


def awaiting_signal() -> Task:
    [task] = planned(TaskRequest("echo"))
    task.start("worker-1", NOW, NOW)
    task.await_signals(1, ["approved"], {"ok": True}, {})
    task.collect_events()
    return task


def test_signal_wait_fails_a_task_still_waiting_for_its_signal() -> None:
    task = awaiting_signal()
    recorded = record_fired(task, FiredTimeout(task.id, K.SIGNAL_WAIT, None), NOW, half)
    assert recorded == TimeoutRecorded(stopped_attempt=False)
    assert events_of(task) == ["TaskTimedOut"]


def test_signal_wait_no_longer_holds_once_the_signal_came() -> None:
    task = awaiting_signal()
    task.signal("approved", None, by="bob", now=NOW)
    task.collect_events()
    assert record_fired(task, FiredTimeout(task.id, K.SIGNAL_WAIT, None), NOW, half) is None
    waiting_for_children = task_in("waiting")  # waiting, but for a child, not a signal
    fired = FiredTimeout(waiting_for_children.id, K.SIGNAL_WAIT, None)
    assert record_fired(waiting_for_children, fired, NOW, half) is None
