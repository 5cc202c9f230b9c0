"""The ``Enqueuer`` contract (``processors/cron.py``; ``Ledger.enqueue_once`` on
PostgreSQL): a request becomes one stored task, and an idempotency key names one task
however often it is enqueued — on PostgreSQL and on the in-memory double alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from execution_ledger.domain.errors import UnknownTaskType
from execution_ledger.domain.schedule_definitions import tick_request
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from tests.contract.conftest import Backend


def test_a_request_becomes_a_stored_ready_task(backend: Backend) -> None:
    task, created = backend.enqueuer.enqueue_once(TaskRequest("job", {"a": 1}))
    assert created
    stored = backend.task(task.id)
    assert (stored.state, stored.type_name, stored.queue, stored.args) == (
        TaskState.READY,
        "job",
        "default",
        {"a": 1},
    )
    assert stored.max_attempts == 3  # the type's retry policy


def test_the_same_idempotency_key_gives_back_the_same_task(backend: Backend) -> None:
    first, created = backend.enqueuer.enqueue_once(TaskRequest("job", idempotency_key="k1"))
    again, created_again = backend.enqueuer.enqueue_once(TaskRequest("job", idempotency_key="k1"))
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    other, created_other = backend.enqueuer.enqueue_once(TaskRequest("job", idempotency_key="k2"))
    assert created_other and other.id != first.id


def test_a_schedule_tick_enqueued_twice_is_one_task(backend: Backend) -> None:
    schedule = backend.registry.schedules["nightly"]
    tick = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    first, _ = backend.enqueuer.enqueue_once(tick_request(schedule, tick))
    again, created = backend.enqueuer.enqueue_once(tick_request(schedule, tick))
    assert (again.id, created) == (first.id, False)
    later, created_later = backend.enqueuer.enqueue_once(
        tick_request(schedule, tick + timedelta(days=1))
    )
    assert created_later and later.id != first.id


def test_a_request_to_run_later_is_scheduled_and_a_dependent_blocked(backend: Backend) -> None:
    later, _ = backend.enqueuer.enqueue_once(
        TaskRequest("job", run_at=backend.clock() + timedelta(hours=1))
    )
    assert backend.task(later.id).state is TaskState.SCHEDULED
    dependent, _ = backend.enqueuer.enqueue_once(TaskRequest("job", depends_on=(str(later.id),)))
    assert backend.task(dependent.id).state is TaskState.BLOCKED


def test_an_unknown_task_type_is_refused(backend: Backend) -> None:
    with pytest.raises(UnknownTaskType):
        backend.enqueuer.enqueue_once(TaskRequest("no_such_type"))


def test_a_key_taken_for_a_period_names_a_new_task_once_the_period_is_over(
    backend: Backend,
) -> None:
    request = TaskRequest("job", idempotency_key="daily", idempotency_period=1.0)
    first, _ = backend.enqueuer.enqueue_once(request)
    assert backend.enqueuer.enqueue_once(request)[0].id == first.id
    backend.pass_time(1.5)
    again, created = backend.enqueuer.enqueue_once(request)
    assert created and again.id != first.id
