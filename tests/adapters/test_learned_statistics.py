"""Learned statistics of a task type, from the learning dataset of real runs."""

from __future__ import annotations

from execution_ledger.adapters.postgres.task_queries import task_type_statistics
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from tests.processors.worker_harness import run_nodes_until


def test_statistics_count_attempts_rates_percentiles_and_suggest_a_timeout(
    runtime: Runtime,
) -> None:
    ids = [runtime.ledger.enqueue(TaskRequest("add", {"a": i, "b": 1})).id for i in range(25)]
    failing = runtime.ledger.enqueue(TaskRequest("fail", {"message": "no"})).id
    run_nodes_until(
        runtime, lambda: all(runtime.store.load(i).state.is_terminal for i in [*ids, failing])
    )
    runtime.catch_up()
    adds = task_type_statistics(runtime.store, "add")
    assert (adds["tasks"], adds["attempts"], adds["by_outcome"]) == (25, 25, {"succeeded": 25})
    assert adds["success_rate"] == 1.0 and adds["timeout_rate"] == 0.0
    runs = adds["run_seconds"]
    assert runs["count"] == 25 and 0 <= runs["p50"] <= runs["p95"] <= runs["p99"] <= runs["max"]
    assert adds["suggested_start_to_close"] == 1.0  # fast runs: the floor
    fails = task_type_statistics(runtime.store, "fail")
    assert fails["attempts"] == 2 and fails["success_rate"] == 0.0  # its type allows 2 attempts
    assert fails["suggested_start_to_close"] is None
