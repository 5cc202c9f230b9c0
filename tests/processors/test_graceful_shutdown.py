"""Graceful shutdown of a worker node (docs/worker.md, "Graceful shutdown"), seen in the log:
the node stops claiming, keeps its attempts' leases while they finish (another node's
watchdog must not time them out), cancels what is still running after the grace period
(``TaskFailed`` with ``WorkerShutdown``, retried per the policy), records it, and releases
everything to the other nodes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import pytest

from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.postgres.event_store import RecordedEvent
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from tests.processors.worker_harness import runtime_with_config

CONFIG = textwrap.dedent(
    """
    [defaults.timeouts]
    heartbeat = "2s"
    start_to_close = "120s"

    [queues.work]
    concurrency = 10

    [queues.other]
    concurrency = 10

    [task_types.four_seconds]
    adapter = "shell"
    queue = "work"
    settings = { argv = ["/bin/sh", "-c", "sleep 4; echo done"] }
    retry = { max_attempts = 1 }

    [task_types.two_seconds]
    adapter = "shell"
    queue = "work"
    settings = { argv = ["/bin/sh", "-c", "sleep 2; echo short"] }

    [task_types.long_once]
    adapter = "shell"
    queue = "work"
    description = "Sleeps the first time (leaving a marker file), ends at once after."
    settings = { argv = ["/bin/sh", "-c", "if [ -e \\"$1\\" ]; then echo again; else touch \\"$1\\"; sleep 61.13; fi", "sh", "{args[marker]}"] }
    retry = { max_attempts = 2, backoff_initial = "50ms", backoff_max = "50ms" }

    [task_types.quick]
    adapter = "shell"
    queue = "work"
    settings = { argv = ["/bin/echo", "quick"] }
    """
)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def rt(ledger_env: None, config_path: Path) -> Iterator[Runtime]:
    runtime = runtime_with_config(config_path.parent, CONFIG)
    yield runtime
    runtime.close()
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any("sleep 61.13" in part for part in cmdline):
            process.kill()


class NodeThread:
    """A worker node running in its own thread and event loop, stopped on request."""

    def __init__(self, runtime: Runtime, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.stop_event = asyncio.Event()
        self.node = WorkerNode(runtime, projections=False, learn_hooks=False, **options)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-node", daemon=True)
        self.thread.start()

    @property
    def worker_id(self) -> str:
        return self.node.worker_id

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.node.run(self.stop_event))
        except BaseException as error:  # surfaced by ``join``
            self.error = error
        finally:
            self.loop.close()

    def signal_stop(self) -> None:
        """Set the node's stop event (what SIGTERM does), and return once it is set."""

        async def set_stop() -> None:
            self.stop_event.set()

        asyncio.run_coroutine_threadsafe(set_stop(), self.loop).result(timeout=10)

    def join(self, timeout: float = 60.0) -> None:
        """Wait for the node's ``run`` to return (its shutdown complete)."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the node did not stop"
        if self.error is not None:
            raise self.error


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def kinds(events: list[RecordedEvent]) -> list[str]:
    return [type(e.event).__name__ for e in events]


def has_event(rt: Runtime, task_id: UUID, *names: str) -> Callable[[], bool]:
    return lambda: any(name in kinds(rt.store.history(task_id)) for name in names)


def first(events: list[RecordedEvent], name: str, attempt: int | None = None) -> RecordedEvent:
    return next(
        e
        for e in events
        if type(e.event).__name__ == name
        and (attempt is None or getattr(e.event, "attempt", None) == attempt)
    )


def test_an_attempt_given_the_grace_period_ends_with_its_own_result_not_a_heartbeat_timeout(
    rt: Runtime, config_path: Path
) -> None:
    # The heartbeat (2 s) is shorter than what is left of the attempt after the stop
    # signal (about 4 s): without renewal its lease would lapse during the grace period.
    task = rt.ledger.enqueue(TaskRequest("four_seconds"))
    watchdog_node = NodeThread(rt, queues=["other"])  # its watchdog scans every 0.5 s
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "execution_ledger.adapters.cli.main",
            "--config",
            str(config_path),
            "worker",
            "--queues",
            "work",
            "--no-projections",
        ],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(has_event(rt, task.id, "TaskStarted"))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        watchdog_node.signal_stop()
        watchdog_node.join()
    events = rt.store.history(task.id)
    assert kinds(events) == ["TaskEnqueued", "TaskStarted", "TaskSucceeded"]
    assert first(events, "TaskStarted").event.worker.split(":")[1] == str(process.pid)
    assert first(events, "TaskSucceeded").event.result["stdout"] == "done\n"


def test_an_attempt_still_running_after_the_grace_period_is_cancelled_and_recorded_as_worker_shutdown(
    rt: Runtime, tmp_path: Path
) -> None:
    # A grace period (3 s) longer than the heartbeat (2 s): the node itself must cancel the
    # attempt, not another node's watchdog after its lease lapsed.
    task = rt.ledger.enqueue(TaskRequest("long_once", {"marker": str(tmp_path / "marker")}))
    watchdog_node = NodeThread(rt, queues=["other"])
    node = NodeThread(rt, queues=["work"], shutdown_grace=3.0)
    try:
        wait_until(has_event(rt, task.id, "TaskStarted"))
    finally:
        node.signal_stop()
        node.join()
        watchdog_node.signal_stop()
        watchdog_node.join()
    events = rt.store.history(task.id)
    assert kinds(events) == ["TaskEnqueued", "TaskStarted", "TaskFailed", "TaskRetryScheduled"]
    failed = first(events, "TaskFailed").event
    assert (failed.attempt, failed.error_class, failed.retryable) == (1, "WorkerShutdown", True)
    assert rt.store.load(task.id).attempts == 1


def test_shutdown_follows_the_documented_sequence_in_the_log(rt: Runtime, tmp_path: Path) -> None:
    """Stop claiming, let running attempts finish within the grace period, cancel the rest,
    record them, release: another node then runs what the stopped one left."""
    short = rt.ledger.enqueue(TaskRequest("two_seconds"))
    long = rt.ledger.enqueue(TaskRequest("long_once", {"marker": str(tmp_path / "marker")}))
    watchdog_node = NodeThread(rt, queues=["other"])
    stopping = NodeThread(rt, queues=["work"], concurrency=2, shutdown_grace=4.0)
    try:
        wait_until(lambda: all(has_event(rt, t.id, "TaskStarted")() for t in (short, long)))
        stopping.signal_stop()
        # Enqueued after the stop signal, while a slot frees up during the grace period.
        late = rt.ledger.enqueue(TaskRequest("quick"))
    finally:
        stopping.signal_stop()
        stopping.join()
        watchdog_node.signal_stop()
        watchdog_node.join()

    # 1. Stopped claiming: the task enqueued after the signal was not started.
    assert kinds(rt.store.history(late.id)) == ["TaskEnqueued"]
    # 2-4. The attempt that ended within the grace period kept its own result; the one
    # still running was cancelled by the node and recorded, after it, as WorkerShutdown.
    short_events, long_events = rt.store.history(short.id), rt.store.history(long.id)
    assert kinds(short_events) == ["TaskEnqueued", "TaskStarted", "TaskSucceeded"]
    assert kinds(long_events) == [
        "TaskEnqueued",
        "TaskStarted",
        "TaskFailed",
        "TaskRetryScheduled",
    ]
    succeeded = first(short_events, "TaskSucceeded")
    shut_down = first(long_events, "TaskFailed")
    assert shut_down.event.error_class == "WorkerShutdown"
    assert succeeded.position < shut_down.position
    assert first(long_events, "TaskRetryScheduled").position > shut_down.position
    for events in (short_events, long_events):
        assert first(events, "TaskStarted").event.worker == stopping.worker_id

    # 5. Released: another node runs the retry and the late task.
    other = NodeThread(rt, queues=["work"])
    try:
        wait_until(has_event(rt, late.id, "TaskSucceeded"))
        wait_until(has_event(rt, long.id, "TaskSucceeded"))
    finally:
        other.signal_stop()
        other.join()
    late_events, long_events = rt.store.history(late.id), rt.store.history(long.id)
    assert first(late_events, "TaskStarted").event.worker == other.worker_id
    retried = first(long_events, "TaskStarted", attempt=2)
    assert retried.event.worker == other.worker_id
    assert retried.position > shut_down.position
    assert first(long_events, "TaskSucceeded").event.result["stdout"] == "again\n"
