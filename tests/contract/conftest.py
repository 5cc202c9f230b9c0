"""One ``backend`` fixture, two implementations of the ports: every contract test runs on the
in-memory doubles (``adapters/memory/``) and on PostgreSQL (a fresh schema per test, the
real ``EventStore``, ``PostgresDispatch``, ``PostgresScheduleClock`` and ``Ledger``).
The Postgres run is the one that counts; the memory run shows the doubles keep the same
promises, so processor tests on them (``tests/processors/*_on_memory.py``) mean something.

What a test needs beyond the ports (cancel a task, pause a queue or a schedule, let the
store settle, let time pass) goes through the backend's own way of doing it: the
``Ledger`` and the projection runners on PostgreSQL, the doubles' own methods in memory.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from execution_ledger.adapters.config_file import parse_config
from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.memory.dispatch import InMemoryDispatch
from execution_ledger.adapters.memory.enqueuer import InMemoryEnqueuer
from execution_ledger.adapters.memory.manual_clock import ManualClock
from execution_ledger.adapters.memory.schedule_clock import InMemoryScheduleClock
from execution_ledger.adapters.memory.task_store import InMemoryTaskStore
from execution_ledger.adapters.postgres.dispatch import PostgresDispatch
from execution_ledger.adapters.postgres.schedule_clock import PostgresScheduleClock
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import Task
from execution_ledger.processors.cron import ScheduleClock
from execution_ledger.processors.worker import Dispatch
from tests.processors.worker_harness import runtime_with_config

CONFIG = textwrap.dedent(
    """
    [defaults.timeouts]
    start_to_close = "20s"
    heartbeat = "5s"

    [queues.default]
    concurrency = 10

    [queues.narrow]
    concurrency = 2

    [queues.other]
    concurrency = 10

    [lanes."agent:*"]
    limit = 1

    [task_types.job]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:add" }
    retry = { max_attempts = 3, backoff_initial = "2s", backoff_max = "2s", jitter = 0 }

    [task_types.narrow_job]
    adapter = "python"
    queue = "narrow"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:add" }

    [task_types.other_job]
    adapter = "python"
    queue = "other"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:add" }

    [task_types.agent_step]
    adapter = "python"
    lane = "agent:{agent_id}"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:add" }

    [task_types.takes_inputs]
    adapter = "python"
    inputs = true
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:add" }

    [schedules.nightly]
    cron = "0 3 * * *"
    task_type = "job"
    """
)
BACKOFF = 2.0  # seconds, the ``job`` type's back-off between attempts


@dataclass
class Backend:
    name: str
    registry: Registry
    store: Any  # InMemoryTaskStore | EventStore: save, load, load_many, latest_versions
    dispatch: Dispatch
    schedule_clock: ScheduleClock
    enqueuer: Any  # InMemoryEnqueuer | Ledger: enqueue_once, enqueue_graph
    clock: Callable[[], datetime]
    cancel: Callable[[UUID], object]
    pause_queue: Callable[[str], object]
    pause_schedule: Callable[[str], object]
    settle: Callable[[], object]  # what follows a write (the projections and the cascade)
    pass_time: Callable[[float], object]  # let this many seconds go by

    def enqueue(self, type_name: str, **fields: Any) -> Task:
        args = fields.pop("args", {})
        task, _ = self.enqueuer.enqueue_once(TaskRequest(type_name, args, **fields))
        return task  # type: ignore[no-any-return]

    def task(self, task_id: UUID) -> Task:
        return self.store.load(task_id)  # type: ignore[no-any-return]


@pytest.fixture(params=["memory", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        yield memory_backend()
        return
    request.getfixturevalue("ledger_env")  # a fresh schema; only the Postgres run needs one
    runtime = runtime_with_config(tmp_path, CONFIG)
    try:
        registry = runtime.ledger.registry
        ledger = runtime.ledger
        yield Backend(
            name="postgres",
            registry=registry,
            store=runtime.store,
            dispatch=PostgresDispatch(runtime.store, registry, utc_now),
            schedule_clock=PostgresScheduleClock(runtime.store),
            enqueuer=ledger,
            clock=utc_now,
            cancel=ledger.cancel,
            pause_queue=ledger.pause_queue,
            pause_schedule=ledger.pause_schedule,
            settle=runtime.catch_up,
            pass_time=time.sleep,
        )
    finally:
        runtime.close()


def memory_backend() -> Backend:
    registry = parse_config(CONFIG, "contract").registry
    clock = ManualClock()
    store = InMemoryTaskStore()
    schedule_clock = InMemoryScheduleClock()

    def cancel(task_id: UUID) -> None:
        task = store.load(task_id)
        task.cancel(by="system")
        store.save(task)

    def pause_queue(name: str) -> None:
        queue = store.load_queue(name)
        queue.pause(by="system")
        store.save(queue)

    return Backend(
        name="memory",
        registry=registry,
        store=store,
        dispatch=InMemoryDispatch(store, registry, clock),
        schedule_clock=schedule_clock,
        enqueuer=InMemoryEnqueuer(store, registry, clock),
        clock=clock,
        cancel=cancel,
        pause_queue=pause_queue,
        pause_schedule=lambda name: schedule_clock.set_paused(name, True),
        settle=lambda: None,
        pass_time=clock.advance,
    )
