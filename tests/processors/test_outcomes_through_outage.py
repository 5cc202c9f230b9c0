"""An attempt that ends while the database is away (a restart, a failover): its outcome
waits in the worker until the database answers again, and is recorded then; the work does
not wait for its lease to expire and run a second time. On a private cluster that the test
stops and starts."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from tests.adapters.http.live_server import LiveServer
from tests.private_postgres import PrivatePostgres, private_postgres
from tests.processors.worker_harness import runtime_with_config, wait_until

CONFIG = textwrap.dedent(
    """
    [defaults.timeouts]
    heartbeat = "90s"

    [task_types.gated]
    adapter = "shell"
    description = "Waits until the file args.gate exists, then prints done."
    settings = { argv = ["/bin/sh", "-c", "while [ ! -e \\"$1\\" ]; do sleep 0.05; done; echo done", "sh", "{args[gate]}"] }
    retry = { max_attempts = 3, backoff_initial = "50ms", backoff_max = "50ms" }
    """
)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivatePostgres]:
    with private_postgres() as started:
        monkeypatch.setenv("LEDGER_DATABASE_URL", started.url)
        monkeypatch.setenv("LEDGER_SCHEMA", f"test_{uuid4().hex[:16]}")
        for name in ("LEDGER_CONFIG", "LEDGER_READ_DATABASE_URL"):
            monkeypatch.delenv(name, raising=False)
        yield started


@pytest.fixture
def rt(server: PrivatePostgres, tmp_path: Path) -> Iterator[Runtime]:
    runtime = runtime_with_config(tmp_path, CONFIG)
    yield runtime
    runtime.close()


def test_an_outcome_that_cannot_be_recorded_waits_for_the_database_and_runs_once(
    server: PrivatePostgres, rt: Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gate = tmp_path / "gate"
    task = rt.ledger.enqueue(TaskRequest("gated", {"gate": str(gate)}))
    with LiveServer(rt, worker=True):
        wait_until(lambda: rt.store.load(task.id).state is TaskState.RUNNING, what="it runs")
        server.stop("immediate")
        gate.touch()  # the attempt ends while no database answers
        wait_until(lambda: "outcomes failed" in caplog.text, timeout=60, what="recording fails")
        server.start()
        wait_until(
            lambda: rt.store.load(task.id).state is TaskState.SUCCEEDED,
            timeout=60,
            what="the outcome recorded",
        )
    kinds = [type(e.event).__name__ for e in rt.store.history(task.id)]
    assert kinds == ["TaskEnqueued", "TaskStarted", "TaskSucceeded"]
