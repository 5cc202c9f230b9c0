"""The example of docs/patterns.md section 6 runs as written: a singleton report per
customer, a debounced reindex run once with the last edit's args, on a real worker node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.coalescing import Debounce
from execution_ledger.domain.submission import TaskRequest
from tests.processors.worker_harness import run_nodes_until

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "coalescing.toml"


@pytest.fixture
def coalescing(ledger_env: None) -> Iterator[Runtime]:
    runtime = open_runtime(EXAMPLE, pool_size=2)
    yield runtime
    runtime.close()


def test_one_report_per_customer_and_one_reindex_per_burst(coalescing: Runtime) -> None:
    ledger = coalescing.ledger
    acme, _ = ledger.enqueue_once(TaskRequest("report", {"customer": "acme"}))
    again, created = ledger.enqueue_once(TaskRequest("report", {"customer": "acme"}))
    assert not created and again.id == acme.id
    edits = [
        ledger.enqueue_once(
            TaskRequest(
                "reindex",
                {"collection": "docs", "edit": n},
                debounce=Debounce("reindex:{collection}", 0.3),
            )
        )
        for n in range(3)
    ]
    reindex = edits[0][0]
    assert [created for _, created in edits] == [True, False, False]

    def done() -> bool:
        states = {ledger.task(t.id).state.value for t in (acme, reindex)}
        return states == {"succeeded"}

    run_nodes_until(coalescing, done)
    finished = ledger.task(reindex.id)
    assert finished.attempts == 1 and finished.result == {"collection": "docs", "edit": 2}
    after, created = ledger.enqueue_once(TaskRequest("report", {"customer": "acme"}))
    assert created and after.id != acme.id  # the finished report freed its key
