"""A large enqueue plans and saves its tasks with the cyclic garbage collector paused, and
leaves it as it was: on after the call (or after a refusal), off if the program had turned
it off. The planning and the save are watched through wrappers that note, each time they
run, whether the collector is on; the real ones run inside."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from execution_ledger.adapters.collector_pause import LARGE_CALL
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import InvalidSubmission
from execution_ledger.domain.submission import TaskRequest


@pytest.fixture
def collector_on_at(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Where the planning and the save ran, each with whether the collector was on."""
    seen: list[str] = []

    def watched(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            seen.append(f"{name}: {'on' if gc.isenabled() else 'off'}")
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(runtime.ledger, "_plan", watched("plan", runtime.ledger._plan))
    monkeypatch.setattr(runtime.store, "save", watched("save", runtime.store.save))
    assert gc.isenabled()
    yield seen
    gc.enable()


def requests(count: int) -> list[TaskRequest]:
    return [TaskRequest("echo", {"i": i}) for i in range(count)]


def test_a_large_graph_is_planned_and_saved_with_the_collector_paused(
    runtime: Runtime, collector_on_at: list[str]
) -> None:
    tasks = runtime.ledger.enqueue_graph(requests(LARGE_CALL))
    assert len(tasks) == LARGE_CALL
    assert collector_on_at == ["plan: off", "save: off"]
    assert gc.isenabled()
    assert runtime.store.load(tasks[-1].id).state.value == "ready"


def test_a_small_enqueue_leaves_the_collector_running(
    runtime: Runtime, collector_on_at: list[str]
) -> None:
    runtime.ledger.enqueue_graph(requests(LARGE_CALL - 1))
    assert collector_on_at == ["plan: on", "save: on"]


def test_a_refused_large_graph_stores_nothing_and_turns_the_collector_back_on(
    runtime: Runtime, collector_on_at: list[str]
) -> None:
    batch = [*requests(LARGE_CALL), TaskRequest("echo", queue="no-such-queue")]
    head = runtime.store.head_position()
    with pytest.raises(InvalidSubmission, match="unknown queue"):
        runtime.ledger.enqueue_graph(batch)
    assert collector_on_at == ["plan: off"]
    assert gc.isenabled()
    assert runtime.store.head_position() == head


def test_a_collector_the_program_turned_off_stays_off(
    runtime: Runtime, collector_on_at: list[str]
) -> None:
    gc.disable()
    runtime.ledger.enqueue_graph(requests(LARGE_CALL))
    assert collector_on_at == ["plan: off", "save: off"]
    assert not gc.isenabled()


def test_a_large_enqueue_in_the_callers_transaction_is_planned_with_the_collector_paused(
    runtime: Runtime, collector_on_at: list[str]
) -> None:
    with psycopg.connect(runtime.database_url) as conn:
        conn.execute("SELECT 1")
        tasks = runtime.ledger.enqueue_in(conn, requests(LARGE_CALL))
    assert collector_on_at == ["plan: off"]
    assert gc.isenabled()
    assert runtime.store.load(tasks[0].id).state.value == "ready"  # committed with the caller
