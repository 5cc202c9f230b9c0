"""A worker node: everything one process runs to execute tasks.

- projection runners (task view, readiness graph + dependency cascade, audit chain,
  learning dataset), each active on one node at a time (advisory lock) and standing by on
  the others: in a child process at a lower CPU priority (``projection_process``, what
  ``ledger worker`` and ``ledger serve`` do) or in threads of this process;
- a listener that turns NOTIFY on ``ledger_ready`` / ``ledger_cancel`` into wake-ups;
- the timeout watchdog;
- the cron scheduler (on every node; each tick still enqueues one task);
- the learn hooks, fed each finished attempt of their task types;
- the worker loop.

``ledger worker`` runs one; ``ledger serve`` and ``ledger demo`` run one beside the HTTP API.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID, uuid4

import psycopg

from execution_ledger.adapters.config_file import learn_hooks_of
from execution_ledger.adapters.executors import executors_by_name
from execution_ledger.adapters.executors.shell_scratch import sweep_orphans
from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.off_loop import run_off_loop
from execution_ledger.adapters.postgres.dispatch import PostgresDispatch
from execution_ledger.adapters.postgres.dispatch_queue import queues_named
from execution_ledger.adapters.postgres.learn_feed import PostgresDatasetFeed
from execution_ledger.adapters.postgres.projection_runner import ProjectionRunner
from execution_ledger.adapters.postgres.reconnect import ReconnectPause, listen_options
from execution_ledger.adapters.postgres.running import cancel_channel, listen, ready_channel
from execution_ledger.adapters.postgres.schedule_clock import PostgresScheduleClock
from execution_ledger.adapters.postgres.schedule_runs import PostgresScheduleRuns
from execution_ledger.adapters.postgres.schedule_tables import PostgresScheduleBook
from execution_ledger.adapters.postgres.timeouts import PostgresTimeouts
from execution_ledger.adapters.projection_process import ProjectionProcess
from execution_ledger.adapters.registry_follower import NodeRegistry
from execution_ledger.adapters.retention.periodic import archive_periodically
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.adapters.telemetry.context import attempt_tracing, tick_trace
from execution_ledger.processors.cron import CronScheduler
from execution_ledger.processors.learn_hooks import LearnHooks
from execution_ledger.processors.worker import Worker, WorkerSettings

log = logging.getLogger(__name__)


class WorkerNode:
    def __init__(
        self,
        runtime: Runtime,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        watchdog_interval: float = 0.5,
        cron_interval: float = 1.0,
        learn_hooks: bool = True,
        projections: bool = True,
        projection_process: bool = False,
        shutdown_grace: float = 5.0,
        registry_interval: float = 2.0,
    ) -> None:
        registry = runtime.settings.config.registry
        self.runtime = runtime
        self.projections = projections  # False: another process runs them (`projections run`)
        self.projection_process = projection_process  # True: in a child, not in threads
        self.queues = tuple(queues or sorted(registry.queues))
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}"
        self.dispatch = PostgresDispatch(runtime.store, registry, clock=utc_now)
        self.timeouts = PostgresTimeouts(runtime.store, clock=utc_now)
        self.watchdog_interval = watchdog_interval
        self.cron_interval = cron_interval
        hooks = learn_hooks_of(registry) if learn_hooks else {}
        self.learn_hooks = LearnHooks(
            hooks, lambda task_type: PostgresDatasetFeed(runtime.store, task_type)
        )
        self.scheduler = CronScheduler(
            registry.schedules,
            PostgresScheduleClock(runtime.store),
            runtime.ledger,
            clock=utc_now,
            book=PostgresScheduleBook(runtime.store, lambda: runtime.ledger.registry.task_types),
            guard=PostgresScheduleRuns(runtime.store, runtime.ledger),
            trace_tick=tick_trace,
        )
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ledger-db")
        self.worker = Worker(
            WorkerSettings(
                self.worker_id, self.queues, concurrency, shutdown_grace=shutdown_grace
            ),
            self.dispatch,
            executors_by_name(dict(runtime.settings.config.adapter_defaults)),
            registry,
            blocking=self._blocking,
            clock=utc_now,
            tracing=attempt_tracing(self.worker_id),
        )
        # The registry version it runs, followed without a restart (registry_follower.py).
        self.registry_follower = NodeRegistry(
            self, serves_all_queues=not queues, interval=registry_interval
        )
        self.worker.between_rounds.append(self.registry_follower.between_rounds)

    async def _blocking(self, function: Callable[..., Any], *args: Any) -> Any:
        return await run_off_loop(self.pool, function, *args)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then finish or hand back running attempts."""
        self.registry_follower.start()
        self.dispatch.register_worker(
            self.worker_id,
            socket.gethostname(),
            os.getpid(),
            self.queues,
            self.worker.settings.concurrency,
        )
        runner_stop = threading.Event()
        in_threads = self.projections and not self.projection_process
        threads = start_projections(self.runtime, runner_stop) if in_threads else []
        helpers = [
            asyncio.create_task(self._listen(stop), name="listener"),
            asyncio.create_task(self._watchdog(stop), name="watchdog"),
            asyncio.create_task(self._cron(stop), name="cron"),
            asyncio.create_task(self._learn(stop), name="learn-hooks"),
            asyncio.create_task(sweep_orphans(stop), name="shell-scratch-sweep"),
            asyncio.create_task(
                archive_periodically(self.runtime, stop, self._blocking), name="archive"
            ),
            asyncio.create_task(self.registry_follower.follow(stop), name="registry-follower"),
        ]
        child = None
        if self.projections and self.projection_process:
            child = asyncio.create_task(
                ProjectionProcess(self.runtime).run(stop), name="projection-process"
            )
        try:
            await self.worker.run(stop)
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if child is not None:  # it stops its process on stop (or when cancelled)
                if not stop.is_set():
                    child.cancel()
                await asyncio.gather(child, return_exceptions=True)
            runner_stop.set()
            for thread in threads:
                thread.join(timeout=5)
            self.pool.shutdown(wait=True)

    async def _listen(self, stop: asyncio.Event) -> None:
        pause = ReconnectPause()
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.runtime.database_url,
                    autocommit=True,
                    **listen_options(self.runtime.database_url),
                ) as conn:
                    schema = self.runtime.settings.schema
                    cancels = cancel_channel(schema)
                    for channel in (ready_channel(schema), cancels):
                        await conn.execute(listen(channel))
                    pause.reset()
                    self.worker.notify_ready()  # work that came while nobody listened
                    async for notice in conn.notifies():
                        if notice.channel == cancels:
                            self._cancelled(notice.payload)
                        else:
                            self._ready(notice.payload)
            except (psycopg.Error, OSError):
                log.warning("notification listener lost its connection; reconnecting")
                await asyncio.sleep(pause.next())

    def _ready(self, payload: str) -> None:
        """Wake the worker for a ready notice naming a queue it serves and has not seen
        paused (no names: wake it whatever; a resume sends none), leaving out the slots its
        own round freed (``dispatch_queue.ready_payload``)."""
        named = queues_named(payload, self.worker_id)
        if named is None or any(
            queue in self.queues and queue not in self.dispatch.paused for queue in named
        ):
            self.worker.notify_ready()

    def _cancelled(self, payload: str) -> None:
        try:
            task_id = UUID(payload)
        except ValueError:
            log.warning("ignoring a cancel notice that is not a task id: %r", payload)
            return
        self.worker.notify_cancelled(task_id)

    async def _learn(self, stop: asyncio.Event) -> None:
        """Feed finished attempts to learn hooks (one node at a time, like a projection)."""
        if not self.learn_hooks.hooks:
            return
        while not stop.is_set():
            try:
                delivered = await self._blocking(self.learn_hooks.run_once)
            except Exception:
                log.exception("a learn hook failed; its rows are delivered again next round")
                delivered = 0
            if not delivered:
                await asyncio.sleep(self.cron_interval)

    async def _cron(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._blocking(self.scheduler.run_once)
            except Exception:
                log.exception("cron round failed")
            await asyncio.sleep(self.cron_interval)

    async def _watchdog(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                fired = await self._blocking(self.timeouts.fired)
                if fired:
                    await self._blocking(self.timeouts.record, fired)
            except Exception:
                log.exception("watchdog round failed")
            await asyncio.sleep(self.watchdog_interval)


def start_projections(runtime: Runtime, stop: threading.Event) -> list[threading.Thread]:
    """One supervised thread per projection runner, until ``stop`` is set."""
    threads = [
        threading.Thread(
            target=_supervise, args=(runner, stop), name=f"projection-{name}", daemon=True
        )
        for name, runner in runtime.runners.items()
    ]
    for thread in threads:
        thread.start()
    return threads


# Seconds between catch-ups of the projections that no dispatch decision waits on.
FOLLOW_PAUSE = {"audit_chain": 0.5, "dataset": 0.5}
# Seconds the others wait after a notice before reading (``ProjectionRunner.run``): a
# task's enqueue, start and end commit within a few milliseconds of each other at low load,
# and one read then takes all three (measured at 50 tasks/s: the projection process's CPU
# per task 8.1 -> 5.1 ms, enqueue -> start p50 7.2 -> 5.6 ms, as the claim no longer shares
# the processors with four projection reads).
FOLLOW_GATHER = 0.01


def _supervise(runner: ProjectionRunner, stop: threading.Event) -> None:
    """Run one runner; a dropped connection restarts it after a pause."""
    pause = FOLLOW_PAUSE.get(runner.projection.name, 0.0)
    while not stop.is_set():
        try:
            runner.run(stop, fallback_poll=0.2, pause=pause, gather=0.0 if pause else FOLLOW_GATHER)
        except Exception:
            log.exception("projection %s stopped; restarting", runner.projection.name)
            stop.wait(1.0)


def stop_when_orphaned(
    stop: threading.Event, parent_pid: int, interval: float = 0.5
) -> threading.Thread:
    """Set ``stop`` once process ``parent_pid`` is no longer this process's parent (it
    ended, and this process was re-parented)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            if stop.wait(interval):
                return
        log.warning("process %d, which started this one, is gone; stopping", parent_pid)
        stop.set()

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
