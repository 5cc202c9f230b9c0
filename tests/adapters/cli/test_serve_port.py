"""``ledger serve`` on a port another process holds: one line, exit status 2, and no
claim to be serving."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


@pytest.mark.usefixtures("ledger_env")
def test_a_busy_port_is_one_line_error_before_claiming_to_serve() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "execution_ledger.adapters.cli.main", "serve", "--port", str(port)],
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr == (
        f"error: port {port} on 127.0.0.1 is in use (another ledger serve?); stop that "
        "process or choose another --port\n"
    )
    assert "serving" not in done.stdout
