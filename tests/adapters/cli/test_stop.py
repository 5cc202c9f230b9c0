"""Ctrl-C (SIGINT to the whole foreground process group, as a terminal sends it) and
SIGTERM stop ``ledger worker`` and ``ledger serve``: exit status 0, no process left behind,
no traceback or warning on stderr — also when the signal comes while the node's projection
child is still starting. (How long it takes is measured and reported, not asserted: the
bound here only fails a hang.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from uuid import uuid4

import psutil
import psycopg
import pytest

HANG = 30.0  # seconds: only a hang fails the test
PROJECTIONS = 4  # task_view, readiness, audit_chain, dataset
APP = f"ledger-stop-{uuid4().hex[:8]}"  # names the node's database sessions


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def start(processes: list[subprocess.Popen[bytes]], *argv: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "execution_ledger.adapters.cli.main", *argv],
        env={**os.environ, "PGAPPNAME": APP},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    processes.append(process)
    return process


def wait_for_line(process: subprocess.Popen[bytes], text: str) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if text in line.decode():
            return
    raise AssertionError(f"exited ({process.wait()}) before printing {text!r}")


def wait_for_the_projections(database_url: str) -> None:
    """Every projection runner of the node's child follows the log (LISTEN on the
    connection that holds its lock): everything the node starts is running."""
    deadline = time.monotonic() + HANG
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity AS a WHERE a.application_name = %s "
                "AND a.query LIKE 'LISTEN %%ledger_events%%' AND EXISTS (SELECT 1 FROM "
                "pg_locks AS l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)",
                (APP,),
            ).fetchone()
            if row is not None and row[0] == PROJECTIONS:
                return
            assert time.monotonic() < deadline, "the projections did not start"
            time.sleep(0.05)


def wait_for_child(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    deadline = time.monotonic() + HANG
    while not (children := psutil.Process(process.pid).children(recursive=True)):
        assert time.monotonic() < deadline, "no projection child was started"
        time.sleep(0.02)
    return children


def stop_and_check(
    process: subprocess.Popen[bytes], children: list[psutil.Process], how: str
) -> None:
    if how == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=HANG)
    _, alive = psutil.wait_procs(children, timeout=HANG)
    assert process.returncode == 0, err.decode()
    assert alive == []
    assert "Traceback" not in err.decode() and "killing" not in err.decode(), err.decode()


@pytest.mark.usefixtures("ledger_env")
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_worker_following_the_log_stops_on_a_signal_leaving_nothing(
    started: list[subprocess.Popen[bytes]], database_url: str, how: str
) -> None:
    worker = start(started, "worker")
    wait_for_the_projections(database_url)
    stop_and_check(worker, wait_for_child(worker), how)


@pytest.mark.usefixtures("ledger_env")
def test_ctrl_c_while_the_projection_child_starts_leaves_nothing(
    started: list[subprocess.Popen[bytes]],
) -> None:
    worker = start(started, "worker")
    wait_for_line(worker, "worker ")
    stop_and_check(worker, wait_for_child(worker), "ctrl-c")


@pytest.mark.usefixtures("ledger_env")
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_serve_stops_on_a_signal_leaving_nothing(
    started: list[subprocess.Popen[bytes]], database_url: str, how: str
) -> None:
    server = start(started, "serve", "--port", str(free_port()))
    wait_for_line(server, "serving http://")
    wait_for_the_projections(database_url)
    stop_and_check(server, wait_for_child(server), how)
