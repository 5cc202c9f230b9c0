"""Idempotency keys: a repeated enqueue returns the existing task and appends nothing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import IdempotencyKeyTaken, InvalidSubmission
from execution_ledger.domain.submission import TaskRequest


def test_a_repeated_enqueue_with_the_same_key_returns_the_first_task(runtime: Runtime) -> None:
    first, created = runtime.ledger.enqueue_once(
        TaskRequest("echo", {"n": 1}, idempotency_key="order-7")
    )
    head = runtime.store.head_position()
    again, created_again = runtime.ledger.enqueue_once(
        TaskRequest("echo", {"n": 2}, idempotency_key="order-7")
    )
    assert (created, created_again) == (True, False)
    assert again.id == first.id and again.args == {"n": 1}
    assert runtime.store.head_position() == head


def test_concurrent_enqueues_with_one_key_create_one_task(runtime: Runtime) -> None:
    barrier = threading.Barrier(4)
    results = []

    def enqueue() -> None:
        barrier.wait()
        results.append(runtime.ledger.enqueue_once(TaskRequest("echo", idempotency_key="once")))

    threads = [threading.Thread(target=enqueue) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({task.id for task, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]


def test_a_key_with_a_period_is_held_within_it_and_free_again_once_it_is_over(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The period runs from the enqueue's time (the ledger's clock): a key taken two hours
    ago for one hour is free, one taken now for one hour is held."""
    hour = 3600.0
    taken_at = datetime.now(UTC) - timedelta(hours=2)
    monkeypatch.setattr(runtime.ledger, "clock", lambda: taken_at)
    expired, _ = runtime.ledger.enqueue_once(
        TaskRequest("echo", idempotency_key="tick", idempotency_period=hour)
    )
    monkeypatch.setattr(runtime.ledger, "clock", lambda: datetime.now(UTC))
    request = TaskRequest("echo", idempotency_key="tick", idempotency_period=hour)

    current, created = runtime.ledger.enqueue_once(request)
    assert created and current.id != expired.id
    again, created_again = runtime.ledger.enqueue_once(request)
    assert not created_again and again.id == current.id


def test_a_graph_naming_a_taken_key_is_refused_and_stores_nothing(runtime: Runtime) -> None:
    runtime.ledger.enqueue(TaskRequest("echo", idempotency_key="k1"))
    head = runtime.store.head_position()
    with pytest.raises(IdempotencyKeyTaken, match="'k1' is held by task"):
        runtime.ledger.enqueue_graph(
            [TaskRequest("echo", ref="a"), TaskRequest("echo", ref="b", idempotency_key="k1")]
        )
    assert runtime.store.head_position() == head


def test_a_period_without_a_key_or_not_positive_is_refused(runtime: Runtime) -> None:
    with pytest.raises(InvalidSubmission, match="idempotency_period"):
        runtime.ledger.enqueue(TaskRequest("echo", idempotency_period=10))
    with pytest.raises(InvalidSubmission, match="idempotency_period"):
        runtime.ledger.enqueue(TaskRequest("echo", idempotency_key="x", idempotency_period=0))


def test_a_graph_of_one_task_naming_a_taken_key_is_refused(runtime: Runtime) -> None:
    runtime.ledger.enqueue(TaskRequest("echo", idempotency_key="k2"))
    with pytest.raises(IdempotencyKeyTaken, match="'k2' is held"):
        runtime.ledger.enqueue_graph([TaskRequest("echo", idempotency_key="k2")])


def test_a_key_named_twice_in_one_graph_is_refused(runtime: Runtime) -> None:
    head = runtime.store.head_position()
    with pytest.raises(IdempotencyKeyTaken, match="named twice"):
        runtime.ledger.enqueue_graph(
            [
                TaskRequest("echo", ref="a", idempotency_key="k3"),
                TaskRequest("echo", ref="b", idempotency_key="k3"),
            ]
        )
    assert runtime.store.head_position() == head
