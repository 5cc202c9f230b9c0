"""Projection runners that die, on a real PostgreSQL: a standby ``ledger projections run``
takes over through the advisory locks when the active one is killed; a worker node restarts
its projection child after it was killed; a runner thread whose connection is dropped is
restarted. Each is shown by the projections following the log again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import psutil
import psycopg
import pytest

from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.submission import TaskRequest
from tests.processors.worker_harness import run_built_nodes_until, wait_until

PROJECTIONS = 4  # task_view, readiness, audit_chain, dataset
STANDBY_RETRY = 1.0  # seconds between a standby runner's tries of its lock


@pytest.fixture
def rt(ledger_env: None) -> Iterator[Runtime]:
    runtime = open_runtime(pool_size=2)
    yield runtime
    runtime.close()


def caught_up(rt: Runtime) -> Callable[[], bool]:
    """Every projection has applied the log up to its head as it is now."""
    head = rt.store.head_position()
    return lambda: all(runner.position() >= head for runner in rt.runners.values())


def backends(rt: Runtime, app: str, where: str) -> list[int]:
    with psycopg.connect(rt.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.pid FROM pg_stat_activity AS a "
            f"WHERE a.application_name = %s AND ({where})",
            (app,),
        ).fetchall()
    return [row[0] for row in rows]


HOLDS_A_PROJECTION_LOCK = (
    "EXISTS (SELECT 1 FROM pg_locks AS l WHERE l.pid = a.pid "
    "AND l.locktype = 'advisory' AND l.granted)"
)
FOLLOWING_THE_LOG = "a.query LIKE 'LISTEN %%ledger_events%%'"


def locks_held(rt: Runtime, app: str) -> int:
    with psycopg.connect(rt.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
            "WHERE a.application_name = %s AND l.locktype = 'advisory' AND l.granted",
            (app,),
        ).fetchone()
    return int(row[0]) if row else 0


def start_projections_process(rt: Runtime, app: str, out: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PGAPPNAME=app, LEDGER_DATABASE_URL=rt.database_url)
    env["LEDGER_SCHEMA"] = rt.settings.schema
    with out.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "execution_ledger.adapters.cli.main", "projections", "run"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def test_a_standby_takes_over_the_projections_when_the_active_process_is_killed(
    rt: Runtime, tmp_path: Path
) -> None:
    first_app, second_app = (f"ledger-projections-{uuid4().hex[:8]}" for _ in range(2))
    first = start_projections_process(rt, first_app, tmp_path / "first.log")
    second = None
    try:
        wait_until(lambda: locks_held(rt, first_app) == PROJECTIONS, what="the first active")
        second_log = tmp_path / "second.log"
        second = start_projections_process(rt, second_app, second_log)
        rt.ledger.enqueue(TaskRequest("echo", {"n": 1}))
        wait_until(caught_up(rt), what="the first process following the log")
        wait_until(lambda: "following the log" in second_log.read_text(), what="second started")
        # Its runners try the locks at once, then every STANDBY_RETRY: let them find the
        # locks taken at least twice, so the takeover below is a standby's.
        time.sleep(2 * STANDBY_RETRY + 0.5)
        assert locks_held(rt, second_app) == 0  # standing by
        first.send_signal(signal.SIGKILL)
        first.wait()
        rt.ledger.enqueue(TaskRequest("echo", {"n": 2}))
        wait_until(lambda: locks_held(rt, second_app) == PROJECTIONS, what="the takeover")
        wait_until(caught_up(rt), what="the standby following the log")
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=20)


def _projection_children() -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process().children()
        if "projections" in child.cmdline() and "run" in child.cmdline()
    ]


def test_a_nodes_projection_child_that_is_killed_is_restarted(rt: Runtime) -> None:
    killed: list[int] = []
    rt.ledger.enqueue(TaskRequest("echo", {"n": 1}))

    def kill_once_then_wait_for_a_new_child() -> bool:
        children = _projection_children()
        if not killed:
            if children and caught_up(rt)():
                killed.append(children[0].pid)
                children[0].kill()
                rt.ledger.enqueue(TaskRequest("echo", {"n": 2}))
            return False
        restarted = [c for c in children if c.pid not in killed and c.status() != "zombie"]
        return bool(restarted) and caught_up(rt)()

    run_built_nodes_until(
        lambda: [WorkerNode(rt, projection_process=True)],
        kill_once_then_wait_for_a_new_child,
        timeout=30,
    )
    assert len(killed) == 1


def test_a_runner_thread_whose_connection_is_dropped_is_restarted(
    ledger_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = f"ledger-node-{uuid4().hex[:8]}"
    monkeypatch.setenv("PGAPPNAME", app)
    rt = open_runtime(pool_size=2)
    dropped: list[int] = []

    def drop_once_then_wait_for_the_runners() -> bool:
        following = backends(rt, app, f"{FOLLOWING_THE_LOG} AND {HOLDS_A_PROJECTION_LOCK}")
        if not dropped:
            if len(following) == PROJECTIONS:
                with psycopg.connect(rt.database_url, autocommit=True) as conn:
                    for pid in following:
                        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                dropped.extend(following)
                rt.ledger.enqueue(TaskRequest("echo", {"n": 1}))
            return False
        back = [pid for pid in following if pid not in dropped]
        return len(back) == PROJECTIONS and caught_up(rt)()

    try:
        run_built_nodes_until(
            lambda: [WorkerNode(rt, projection_process=False)],
            drop_once_then_wait_for_the_runners,
            timeout=30,
        )
    finally:
        rt.close()
    assert len(dropped) == PROJECTIONS
