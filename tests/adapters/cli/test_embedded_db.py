"""``ledger db status|stop|reset`` on an embedded PostgreSQL started in a temporary data
directory (``LEDGER_EMBEDDED_DIR``), never the machine's shared server: a command that
starts it says where it runs; status, stop and reset act on it without starting it."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from execution_ledger.adapters.postgres.embedded import running_server, stop_embedded_postgres

LEDGER = [sys.executable, "-m", "execution_ledger.adapters.cli.main"]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: every pytest session (other engineers' too) sets its
    # base directory back to mode 0700, which the server's system user cannot traverse.
    parent = Path(tempfile.mkdtemp(prefix="ledger-embedded-test-"))
    pgdata = parent / "pgdata"
    try:
        yield pgdata
    finally:
        if running_server(pgdata) is not None:  # a failed test leaves no server behind
            stop_embedded_postgres(pgdata)
        shutil.rmtree(parent, ignore_errors=True)


def ledger(data_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_DATABASE_URL"}
    env["LEDGER_EMBEDDED_DIR"] = str(data_dir)
    env.pop("LEDGER_SCHEMA", None)
    return subprocess.run(
        [*LEDGER, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_status_stop_and_reset_of_the_embedded_server(data_dir: Path) -> None:
    assert ledger(data_dir, "db", "status").stdout.startswith(f"absent: no data dir at {data_dir}")
    assert not data_dir.exists()  # status did not start one

    first = ledger(data_dir, "tasks", "--json")
    assert first.returncode == 0, first.stderr
    server = running_server(data_dir)
    assert server is not None
    # Run as root on a machine that never ran it, it first says it creates its system user.
    lines = first.stderr.splitlines(keepends=True)
    if lines and lines[0].startswith("creating the system user "):
        assert "PostgreSQL does not run as root" in lines.pop(0)
    assert "".join(lines) == (
        f"started the embedded PostgreSQL ({server.where()}); `ledger db stop` stops it\n"
    )
    assert ledger(data_dir, "tasks", "--json").stderr == ""  # reused: nothing to say

    status = ledger(data_dir, "db", "status")
    assert (status.returncode, status.stdout) == (0, f"running: {server.where()}\n")

    stop = ledger(data_dir, "db", "stop")
    assert (stop.returncode, stop.stdout) == (0, f"stopped: {server.where()}\n")
    assert not psutil.pid_exists(server.pid) or psutil.Process(server.pid).status() == "zombie"
    assert ledger(data_dir, "db", "status").stdout.startswith(f"stopped: data dir {data_dir}")
    assert ledger(data_dir, "db", "stop").stdout == f"not running: data dir {data_dir}\n"

    unconfirmed = ledger(data_dir, "db", "reset")  # no terminal to ask on, no --yes
    assert unconfirmed.returncode == 2
    assert unconfirmed.stderr == (
        f"error: reset deletes {data_dir} and every ledger in it; give --yes to confirm\n"
    )
    assert (data_dir / "PG_VERSION").exists()

    reset = ledger(data_dir, "db", "reset", "--yes")
    assert (reset.returncode, reset.stdout) == (0, f"reset: deleted {data_dir}\n")
    assert not data_dir.exists()


def test_reset_stops_a_running_server_before_deleting_its_data(data_dir: Path) -> None:
    assert ledger(data_dir, "tasks").returncode == 0
    server = running_server(data_dir)
    assert server is not None
    reset = ledger(data_dir, "db", "reset", "--yes")
    assert reset.stdout == f"reset: stopped pid {server.pid}, deleted {data_dir}\n"
    assert not data_dir.exists()
    assert not psutil.pid_exists(server.pid) or psutil.Process(server.pid).status() == "zombie"


@pytest.mark.parametrize(("answer", "kept"), [(b"n\n", True), (b"\n", True), (b"yes\n", False)])
def test_reset_at_a_terminal_asks_first(data_dir: Path, answer: bytes, kept: bool) -> None:
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("18\n")  # no server runs on it: nothing to stop
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_DATABASE_URL"}
    env["LEDGER_EMBEDDED_DIR"] = str(data_dir)
    process = subprocess.Popen(
        [*LEDGER, "db", "reset"], env=env, stdin=follower, stdout=subprocess.PIPE, text=True
    )
    os.close(follower)
    try:
        os.write(leader, answer)
        out, _ = process.communicate(timeout=60)
    finally:
        os.close(leader)
    assert f"delete {data_dir} and every ledger in it? [y/N]" in out
    if kept:
        assert process.returncode == 1 and out.endswith("nothing deleted\n")
        assert (data_dir / "PG_VERSION").exists()
    else:
        assert process.returncode == 0 and out.endswith(f"reset: deleted {data_dir}\n")
        assert not data_dir.exists()
