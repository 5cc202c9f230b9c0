"""``ledger --url URL``: the task commands against a real ``ledger serve`` (its own process,
with its worker node) over HTTP, printing what the local commands print; commands that
need the database, and whole ids, are said as such."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from tests.adapters.cli.test_stop import free_port

START_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def service(database_url: str) -> Iterator[str]:
    """``ledger serve`` on a schema of its own, until the module's tests end."""
    schema = f"remote_{uuid4().hex[:10]}"
    port = free_port()
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_SCHEMA": schema}
    env.pop("LEDGER_CONFIG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "execution_ledger.adapters.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("ledger serve did not answer") from None
            time.sleep(0.2)
    try:
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def ledger(url: str, *argv: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    if token is not None:
        env["LEDGER_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "execution_ledger.adapters.cli.main", "--url", url, *argv],
        env=env,  # no database URL: everything goes over HTTP
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_enqueue_show_and_cancel_over_http(service: str) -> None:
    enqueued = ledger(service, "enqueue", "echo", "-a", "n=3", "--run-at", "2999-01-01T00:00:00Z")
    assert enqueued.returncode == 0, enqueued.stderr
    task_id, type_name, state = enqueued.stdout.split()[:3]
    assert (type_name, state) == ("echo", "scheduled")
    shown = ledger(service, "show", task_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["args"] == {"n": 3}
    cancelled = ledger(service, "cancel", task_id, "--reason", "not needed")
    assert cancelled.stdout.split() == [task_id, "cancelled"]
    history = ledger(service, "history", task_id, "--json")
    events = json.loads(history.stdout)["events"]
    assert [e["type"] for e in events] == ["TaskEnqueued", "TaskCancelled"]


def test_the_task_list_over_http(service: str) -> None:
    tag = f"t{uuid4().hex[:6]}"
    for n in range(3):
        assert ledger(service, "enqueue", "echo", "-a", f"n={n}", "--tag", tag).returncode == 0
    listed = ledger(service, "tasks", "--tag", tag, "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["tasks"]) == 3
    piped = ledger(service, "tasks", "--tag", tag)
    lines = piped.stdout.splitlines()
    assert lines[0].split()[:2] == ["id", "type"] and len(lines) == 4
    assert all(len(line.split()[0]) == 36 for line in lines[1:])  # whole ids when piped


def test_refusals_over_http_are_one_line_errors(service: str) -> None:
    unknown = ledger(service, "show", str(uuid4()))
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: ")
    assert "no task" in unknown.stderr and "Traceback" not in unknown.stderr
    prefix = ledger(service, "show", "abcd1234")
    assert prefix.returncode == 2 and "whole task id" in prefix.stderr
    bad_state = ledger(service, "tasks", "--state", "bogus")
    assert bad_state.returncode == 2 and "bogus" in bad_state.stderr
    local_only = ledger(service, "audit", "verify")
    assert local_only.returncode == 2 and "LEDGER_DATABASE_URL" in local_only.stderr


def test_an_unreachable_service_is_said_in_one_line() -> None:
    result = ledger(f"http://127.0.0.1:{free_port()}", "tasks")
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_token_file_that_cannot_be_read_is_refused(service: str, tmp_path: Path) -> None:
    result = ledger(service, "--token-file", str(tmp_path / "missing"), "tasks")
    assert result.returncode == 2 and "--token-file" in result.stderr
