"""A worker node that loses its database connections mid-round, on a real PostgreSQL: the
round's outcomes are recorded on their own, the claim is tried again after the poll
interval, the notification listener reconnects, and the work completes.

The node runs as a ``ledger worker`` process whose connections carry their own
``application_name`` (``PGAPPNAME``), so the test drops exactly those, with
``pg_terminate_backend``, as a server restart or a network cut would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg.rows import dict_row

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from tests.processors.worker_harness import runtime_with_config, wait_until

CONFIG = textwrap.dedent(
    """
    [defaults.timeouts]
    heartbeat = "2s"

    [task_types.gated]
    adapter = "shell"
    description = "Waits until the file args.gate exists, then prints done."
    settings = { argv = ["/bin/sh", "-c", "while [ ! -e \\"$1\\" ]; do sleep 0.05; done; echo done", "sh", "{args[gate]}"] }
    retry = { max_attempts = 3, backoff_initial = "50ms", backoff_max = "50ms" }

    [task_types.quick]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
    """
)


class Node:
    """A ``ledger worker`` process whose connections are named ``app``."""

    def __init__(self, rt: Runtime, config: Path, log: Path, concurrency: int) -> None:
        self.app = f"ledger-node-{uuid4().hex[:8]}"
        self.log = log
        env = dict(os.environ, PGAPPNAME=self.app)
        env["LEDGER_DATABASE_URL"] = rt.database_url
        env["LEDGER_SCHEMA"] = rt.settings.schema
        command = [sys.executable, "-m", "execution_ledger.adapters.cli.main", "--config", str(config)]
        command += ["worker", "--concurrency", str(concurrency)]
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=out)

    def backends(self, database_url: str, where: str = "true") -> list[dict[str, Any]]:
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
            return conn.execute(
                "SELECT pid, query, wait_event_type, wait_event FROM pg_stat_activity "
                f"WHERE application_name = %s AND ({where})",
                (self.app,),
            ).fetchall()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


WAITING_FOR_CLAIM_LOCK = "wait_event_type = 'Lock' AND wait_event = 'advisory'"
LISTENING = "query LIKE 'LISTEN %%ledger_cancel%%'"


def terminate(database_url: str, pids: list[int]) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.fixture
def rt(ledger_env: None, tmp_path: Path) -> Iterator[Runtime]:
    runtime = runtime_with_config(tmp_path, CONFIG)
    yield runtime
    runtime.close()


@pytest.fixture
def start_node(rt: Runtime, tmp_path: Path) -> Iterator[Any]:
    nodes: list[Node] = []

    def start(concurrency: int) -> Node:
        nodes.append(Node(rt, tmp_path / "ledger.toml", tmp_path / "node.log", concurrency))
        return nodes[-1]

    yield start
    for node in nodes:
        node.stop()


def state(rt: Runtime, task_id: UUID) -> TaskState:
    return rt.store.load(task_id).state


def names(rt: Runtime, task_id: UUID) -> list[str]:
    return [type(e.event).__name__ for e in rt.store.history(task_id)]


def test_a_round_that_loses_its_connection_records_its_outcomes_apart_and_claims_again(
    rt: Runtime, start_node: Any, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gated = rt.ledger.enqueue(TaskRequest("gated", {"gate": str(gate)}))
    after = rt.ledger.enqueue(TaskRequest("quick", {"n": 1}))
    node = start_node(concurrency=1)
    wait_until(lambda: state(rt, gated.id) is TaskState.RUNNING, what="the gated task runs")
    # Hold the claim lock of the queue, so the node's next round (the one carrying the
    # gated task's outcome) waits inside its transaction; then drop that connection.
    with psycopg.connect(rt.database_url, autocommit=True) as holder:
        holder.execute(
            "SELECT pg_advisory_lock(hashtextextended(%s, 0))",
            (f"{rt.settings.schema}:claim:default",),
        )
        gate.touch()
        wait_until(lambda: node.backends(rt.database_url, WAITING_FOR_CLAIM_LOCK) != [])
        [round_backend] = node.backends(rt.database_url, WAITING_FOR_CLAIM_LOCK)
        terminate(rt.database_url, [round_backend["pid"]])
        # The outcome is recorded on its own, while claims are still held up ...
        wait_until(lambda: state(rt, gated.id) is TaskState.SUCCEEDED, what="outcome apart")
        # ... and the claim is tried again (on another connection) after the poll interval.
        wait_until(
            lambda: [
                b
                for b in node.backends(rt.database_url, WAITING_FOR_CLAIM_LOCK)
                if b["pid"] != round_backend["pid"]
            ]
            != [],
            what="the claim tried again",
        )
        assert state(rt, after.id) is TaskState.READY
    wait_until(lambda: state(rt, after.id) is TaskState.SUCCEEDED, what="the next task runs")
    assert names(rt, gated.id) == ["TaskEnqueued", "TaskStarted", "TaskSucceeded"]
    assert rt.store.load(gated.id).result["stdout"] == "done\n"
    assert "claiming failed; trying again after the poll interval" in node.log.read_text()


def test_a_node_that_loses_every_connection_finishes_its_work_and_claims_the_next(
    rt: Runtime, start_node: Any, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gated = rt.ledger.enqueue(TaskRequest("gated", {"gate": str(gate)}))
    node = start_node(concurrency=2)
    wait_until(lambda: state(rt, gated.id) is TaskState.RUNNING, what="the gated task runs")
    wait_until(lambda: node.backends(rt.database_url, LISTENING) != [], what="the listener")
    dropped = [b["pid"] for b in node.backends(rt.database_url)]
    terminate(rt.database_url, dropped)
    gate.touch()
    later = [rt.ledger.enqueue(TaskRequest("quick", {"n": n})).id for n in range(3)]
    wait_until(lambda: state(rt, gated.id).is_terminal, what="the gated task ends")
    wait_until(
        lambda: all(state(rt, t) is TaskState.SUCCEEDED for t in later), what="the next tasks"
    )
    # Its outcome was recorded, or (if every connection it tried was dead) its attempt
    # timed out on its heartbeat and was retried: either way the work completed.
    assert state(rt, gated.id) is TaskState.SUCCEEDED
    # The listener reconnected on a new connection.
    wait_until(
        lambda: [b for b in node.backends(rt.database_url, LISTENING) if b["pid"] not in dropped]
        != [],
        what="the listener's new connection",
    )
    assert "notification listener lost its connection; reconnecting" in node.log.read_text()
    assert node.process.poll() is None
