"""A worker loop on the in-memory ports (``adapters/memory/``): the real ``Worker`` over
``InMemoryDispatch``, a manual clock and scripted executors, so a processor test runs in
milliseconds. The contract suites (``tests/contract/``) show the doubles keep the promises
of the PostgreSQL implementations; the Postgres tests beside this stay the ones that count.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from execution_ledger.adapters.memory.dispatch import InMemoryDispatch
from execution_ledger.adapters.memory.enqueuer import InMemoryEnqueuer
from execution_ledger.adapters.memory.manual_clock import ManualClock
from execution_ledger.adapters.memory.task_store import InMemoryTaskStore
from execution_ledger.domain.execution import Execution, ExecutionResult
from execution_ledger.domain.registry import Registry, build_registry
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import Task
from execution_ledger.processors.worker import Worker, WorkerSettings

_Result = TypeVar("_Result")
Script = Callable[[Execution], Awaitable[ExecutionResult]]
HANG_GUARD = 10.0  # seconds: a test whose condition never holds fails instead of hanging


@dataclass
class Run:
    """One execution as the executor saw it: which attempt, and the (manual) time it began."""

    type_name: str
    task_id: UUID
    attempt: int
    began: datetime
    args: dict[str, Any]
    inputs: Mapping[str, Any] | None


@dataclass
class ScriptedExecutor:
    """Runs each task type's script; records every execution it was given."""

    scripts: Mapping[str, Script]
    clock: Callable[[], datetime]
    runs: list[Run] = field(default_factory=list)

    async def run(self, execution: Execution) -> ExecutionResult:
        self.runs.append(
            Run(
                execution.type_name,
                execution.task_id,
                execution.attempt,
                self.clock(),
                execution.args,
                execution.inputs,
            )
        )
        return await self.scripts[execution.type_name](execution)


async def on_the_loop(function: Callable[..., _Result], /, *args: Any) -> _Result:
    """The worker's "run this off the loop", inline: the in-memory ports never block."""
    return function(*args)


class MemoryWorld:
    """A registry (from TOML text), the in-memory store and dispatch, a manual clock."""

    def __init__(self, config: str) -> None:
        self.registry: Registry = build_registry(tomllib.loads(config))
        self.clock = ManualClock()
        self.store = InMemoryTaskStore()
        self.dispatch = InMemoryDispatch(self.store, self.registry, self.clock)
        self.enqueuer = InMemoryEnqueuer(self.store, self.registry, self.clock)

    def enqueue(self, type_name: str, **args: Any) -> UUID:
        return self.enqueuer.enqueue(TaskRequest(type_name, args)).id

    def task(self, task_id: UUID) -> Task:
        return self.store.load(task_id)

    def cancel(self, task_id: UUID) -> None:
        task = self.store.load(task_id)
        task.cancel(by="test")
        self.store.save(task)

    def worker(
        self, scripts: Mapping[str, Script], queues: tuple[str, ...] = ("default",), **settings: Any
    ) -> tuple[Worker, ScriptedExecutor]:
        """A worker whose ``test`` adapter runs ``scripts``; it polls, renews and gives up
        on shutdown within milliseconds unless ``settings`` say otherwise."""
        options = {
            "poll_interval": 0.005,
            "renew_interval": 0.005,
            "shutdown_grace": 0.05,
            **settings,
        }
        executor = ScriptedExecutor(scripts, self.clock)
        worker = Worker(
            WorkerSettings("w1", queues, **options),
            self.dispatch,
            {"test": executor},
            self.registry,
            on_the_loop,
            self.clock,
        )
        return worker, executor

    def run_until(self, worker: Worker, done: Callable[[], bool], tick: float = 0.0) -> None:
        """Run ``worker`` until ``done()`` holds, moving the manual clock on by ``tick``
        seconds at each look (so back-offs and ``run_at`` pass in no time); then stop it
        and let it shut down."""

        async def main() -> None:
            stop = asyncio.Event()
            running = asyncio.create_task(worker.run(stop))
            try:
                async with asyncio.timeout(HANG_GUARD):
                    while not done():
                        if running.done():
                            running.result()  # a crashed loop fails the test
                        self.clock.advance(tick)
                        worker.notify_ready()
                        await asyncio.sleep(0.001)
            finally:
                stop.set()
                await running

        asyncio.run(main())
