"""A worker killed with SIGKILL mid-task: its attempt is timed out (heartbeat) and retried
by another worker; a task that keeps killing its worker is parked after max_attempts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID

import psutil
import pytest

from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.postgres.timeouts import PostgresTimeouts
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from tests.processors.worker_harness import run_nodes_until, runtime_with_config

HEARTBEAT = 2.0
CONFIG = textwrap.dedent(
    f"""
    [defaults.timeouts]
    heartbeat = {HEARTBEAT}

    [task_types.slow_once]
    adapter = "shell"
    description = "Sleeps the first time (leaving a marker file), succeeds after."
    settings = {{ argv = ["/bin/sh", "-c", "if [ -e \\"$1\\" ]; then echo again; else touch \\"$1\\"; sleep 60.17; fi", "sh", "{{args[marker]}}"] }}
    retry = {{ max_attempts = 3, backoff_initial = "50ms", backoff_max = "50ms" }}

    [task_types.slow_always]
    adapter = "shell"
    settings = {{ argv = ["/bin/sleep", "60.17"] }}
    retry = {{ max_attempts = 2, backoff_initial = "50ms", backoff_max = "50ms" }}
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
    # The attempts' processes this test's killed workers left behind, known by their unusual
    # duration (nothing else on the machine is touched).
    for process in psutil.process_iter(["cmdline"]):
        if any("60.17" in part for part in process.info["cmdline"] or []):
            process.kill()


def start_worker_process(config_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "execution_ledger.adapters.cli.main", "--config", str(config_path), "worker"],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not seen within {timeout:g} s"
        time.sleep(0.05)


def running_attempt(rt: Runtime, task_id: UUID, attempt: int) -> Callable[[], bool]:
    def check() -> bool:
        task = rt.store.load(task_id)
        return task.state is TaskState.RUNNING and task.attempts == attempt

    return check


def test_a_killed_workers_attempt_is_timed_out_and_retried_by_another(
    rt: Runtime, config_path: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    task = rt.ledger.enqueue(TaskRequest("slow_once", {"marker": str(marker)}))
    process = start_worker_process(config_path)
    attempt_1 = running_attempt(rt, task.id, 1)
    try:
        # Killed mid-task: once its command runs (the marker is there), not between the
        # TaskStarted commit and the spawn, which would leave attempt 2 the 60 s sleep.
        wait_for(lambda: attempt_1() and marker.exists(), "attempt 1's command running")
        process.send_signal(signal.SIGKILL)
        process.wait()
        run_nodes_until(rt, lambda: rt.store.load(task.id).state.is_terminal, timeout=60)
    finally:
        process.kill()
    done = rt.store.load(task.id)
    assert (done.state, done.attempts) == (TaskState.SUCCEEDED, 2)
    assert done.result["stdout"] == "again\n"
    timeouts = [
        e.event for e in rt.store.history(task.id) if type(e.event).__name__ == "TaskTimedOut"
    ]
    assert [(t.kind, t.attempt) for t in timeouts] == [("heartbeat", 1)]
    started = [
        e.event for e in rt.store.history(task.id) if type(e.event).__name__ == "TaskStarted"
    ]
    assert started[0].worker != started[1].worker  # the killed process, then this test's node


def test_a_task_that_keeps_killing_its_worker_is_parked_after_max_attempts(
    rt: Runtime, config_path: Path
) -> None:
    task = rt.ledger.enqueue(TaskRequest("slow_always"))
    watchdog = PostgresTimeouts(rt.store, clock=utc_now)
    for attempt in (1, 2):
        process = start_worker_process(config_path)
        try:
            wait_for(running_attempt(rt, task.id, attempt), f"attempt {attempt} running")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()

        def timed_out() -> bool:
            watchdog.record(watchdog.fired())
            return rt.store.load(task.id).state is not TaskState.RUNNING

        wait_for(timed_out, f"attempt {attempt} timed out by the watchdog")
    parked = rt.store.load(task.id)
    assert (parked.state, parked.attempts, parked.timeout_kind) == (
        TaskState.FAILED,
        2,
        "heartbeat",
    )
    names = [type(e.event).__name__ for e in rt.store.history(task.id)]
    assert names.count("TaskStarted") == 2 and names.count("TaskRetryScheduled") == 1
