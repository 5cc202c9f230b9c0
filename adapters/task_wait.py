"""Waiting for a task to end, as ``POST /v1/tasks?wait=`` and a NATS request do: look at the
task, and until it is terminal (or the time is up, or the server closes) wait for the log to
grow (``LogWatcher``), looking again at most every ``WAKE_INTERVAL``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from execution_ledger.adapters.ledger_reads import LedgerReads
from execution_ledger.adapters.postgres.event_store import RecordedEvent
from execution_ledger.adapters.postgres.log_watcher import LogWatcher
from execution_ledger.domain.task import Task

WAKE_INTERVAL = 0.05  # seconds between two looks at a waited-on task, at most

OffLoop = Callable[..., Awaitable[Any]]


async def wait_for_end(
    reads: LedgerReads,
    watcher: LogWatcher,
    off_loop: OffLoop,
    task_id: UUID,
    seconds: float,
    closing: asyncio.Event,
) -> tuple[Task, list[RecordedEvent]]:
    """The task and its events once it is terminal, or when ``seconds`` have passed, or as
    soon as ``closing`` is set; ``off_loop`` runs the blocking read off the event loop."""
    deadline = time.monotonic() + seconds
    while True:
        changed = watcher.changed()  # before the read: an append after it sets this token
        looked = time.monotonic()
        task, events = await off_loop(reads.task_and_history, task_id)
        left = deadline - time.monotonic()
        if task.state.is_terminal or left <= 0 or closing.is_set():
            return task, events
        await watcher.wait(changed, left)
        # Bursts of appends (other tasks' events): look again at most every WAKE_INTERVAL.
        pause = min(looked + WAKE_INTERVAL, deadline) - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
