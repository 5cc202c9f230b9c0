"""A private PostgreSQL cluster that a test (or a benchmark) may stop and start at will:
initdb into a fresh directory, then ``pg_ctl`` on a free loopback port, with its socket in
that directory. Never the machine's shared server.

As root the server's programs run as the ``postgres`` user (``runuser``), in a directory it
owns; otherwise as the current user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """One cluster in its own directory; ``start`` / ``stop`` as often as needed."""

    def __init__(self, password: str | None = None, primary: PrivatePostgres | None = None):
        """A new cluster (with ``password``: connections over TCP need it, scram-sha-256),
        or, with ``primary``, a streaming replica of that started cluster
        (``pg_basebackup -R``; a hot standby, read-only until ``promote``)."""
        self.root = Path(tempfile.mkdtemp(prefix="ledger-private-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        if primary is not None:
            self._run(
                "pg_basebackup", "-D", str(self.data), "-h", "127.0.0.1",
                "-p", str(primary.port), "-U", "postgres", "-R", "-X", "stream", "-c", "fast",
            )  # fmt: skip
            return
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
            "-E", "UTF8",
        )  # fmt: skip
        if password is not None:
            self._require_password(password)

    def _require_password(self, password: str) -> None:
        """Set the superuser's password and ask it of every TCP connection."""
        self.start()
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(password))
                )
        finally:
            self.stop("fast")
        hba = self.data / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        rules = [line.replace("trust", "scram-sha-256") if line.startswith("host") else line
                 for line in lines]  # fmt: skip
        hba.write_text("\n".join(rules) + "\n")

    def promote(self) -> None:
        """Make this replica a primary (its primary stopped: a failover)."""
        self._run("pg_ctl", "promote", "-D", str(self.data), "-w")

    def execute(self, statement: str) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (e.g. ``SELECT pg_wal_replay_pause()``)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c max_connections=200"
        )
        log = str(self.root / "server.log")
        self._run("pg_ctl", "start", "-D", str(self.data), "-w", "-l", log, "-o", options)

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: every connection dropped at once, as in a crash)."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-w", "-m", mode)

    def accepting(self) -> bool:
        result = subprocess.run(
            [str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-w", "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(BIN / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr}")


@contextmanager
def private_postgres(password: str | None = None) -> Iterator[PrivatePostgres]:
    """A started private cluster, stopped and removed afterwards."""
    server = PrivatePostgres(password)
    try:
        server.start()
        yield server
    finally:
        server.close()
