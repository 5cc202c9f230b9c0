"""Small helpers shared by tests: play a worker's part on a task without running a worker;
wait for something that must happen (``eventually``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from execution_ledger.adapters.postgres.event_store import EventStore


def now() -> datetime:
    return datetime.now(UTC)


def start(store: EventStore, task_id: UUID, worker: str = "test-worker") -> int:
    task = store.load(task_id)
    attempt = task.start(worker, now() + timedelta(seconds=30), now())
    store.save(task)
    return attempt


def succeed(store: EventStore, task_id: UUID, result: Any = None) -> None:
    attempt = start(store, task_id)
    task = store.load(task_id)
    task.succeed(attempt, result if result is not None else {"ok": True})
    store.save(task)


def fail(store: EventStore, task_id: UUID, retry: bool = False) -> None:
    attempt = start(store, task_id)
    task = store.load(task_id)
    task.fail(attempt, "RuntimeError", "boom")
    if retry:
        task.schedule_retry(now() + timedelta(seconds=60))
    store.save(task)


def eventually(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """``check()``'s first truthy value, polled every 50 ms (fails after ``timeout``)."""
    give_up = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)
