"""``ledger projections rebuild`` while a node runs: the node's runners stand aside for
the rebuild and follow the log again after it; the rebuilt read models equal the ones
the node had projected, and new work is projected as before."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from execution_ledger.adapters.postgres.task_queries import get_task_row
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import TaskNotFound
from execution_ledger.domain.submission import TaskRequest

LEDGER = [sys.executable, "-m", "execution_ledger.adapters.cli.main"]
HANG = 60.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def succeeded(runtime: Runtime, task_id: Any) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return bool(get_task_row(runtime.store, task_id)["state"] == "succeeded")
        except TaskNotFound:
            return False

    return check


def read_models(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every projection's tables, in a stable order."""
    tables = [table for runner in runtime.runners.values() for table in runner.projection.tables]
    with psycopg.connect(runtime.database_url) as conn:
        return {
            table: sorted(
                conn.execute(
                    sql.SQL("SELECT * FROM {}").format(sql.Identifier(runtime.settings.schema, table))
                ).fetchall(),
                key=repr,
            )
            for table in tables
        }


@pytest.fixture
def worker(runtime: Runtime) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [*LEDGER, "worker"],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)


def test_a_rebuild_while_a_worker_runs_succeeds_and_the_worker_projects_after(
    runtime: Runtime, worker: subprocess.Popen[bytes]
) -> None:
    tasks = runtime.ledger.enqueue_graph(
        [
            TaskRequest("square", {"n": 7}, ref="square"),
            TaskRequest("add", {"a": 1, "b": 2}, ref="sum", depends_on=("square",)),
        ]
    )
    wait_until(succeeded(runtime, tasks[-1].id), "the worker did not run and project the graph")
    head = runtime.store.head_position()
    wait_until(
        lambda: all(r.position() >= head for r in runtime.runners.values()),
        "the worker's projections did not catch up",
    )
    projected = read_models(runtime)

    rebuild = subprocess.run(
        [*LEDGER, "projections", "rebuild", "all"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=HANG * 2,
    )
    assert rebuild.returncode == 0, rebuild.stderr
    assert rebuild.stdout.count("replayed") == len(runtime.runners)
    assert read_models(runtime) == projected

    later = runtime.ledger.enqueue(TaskRequest("add", {"a": 20, "b": 22}))
    wait_until(succeeded(runtime, later.id), "the worker did not project after the rebuild")
    assert get_task_row(runtime.store, later.id)["result"] == {"sum": 42}
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=HANG)
    assert worker.returncode == 0, err.decode()


def test_a_rebuild_refuses_a_holder_that_does_not_stand_aside_and_changes_nothing(
    runtime: Runtime,
) -> None:
    from execution_ledger.adapters.postgres.projection_runner import ProjectionBusy

    runtime.ledger.enqueue(TaskRequest("echo", {}))
    runner = runtime.runners["task_view"]
    runner.catch_up()
    before = read_models(runtime)
    held = runner.exclusive()  # as by a process that knows nothing of rebuilds
    with held, pytest.raises(ProjectionBusy, match=r"still run by another .* stop it first"):
        runner.rebuild(wait_seconds=0.5)
    assert read_models(runtime) == before
    assert runner.position() == runtime.store.head_position()
