"""``ledger demo`` at a terminal: what is left on the screen once it is done shows the live
table once (title and all) — no other process writes into the live display."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest

CONTROL = re.compile(r"(\x1b\[[0-9;?]*[A-Za-z]|\r|\n)")
TITLE = "running the demo graph"


def final_screen(output: str) -> list[str]:
    """The lines a terminal shows after ``output``, for the controls rich's live display
    uses: carriage return, newline, cursor up (``A``), erase line (``K``); styles and
    cursor visibility are ignored."""
    screen, row, col = [""], 0, 0
    for token in CONTROL.split(output):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            if row == len(screen):
                screen.append("")
        elif token.startswith("\x1b["):
            if token[-1] == "A":
                row = max(0, row - int(token[2:-1] or 1))
            elif token[-1] == "K":
                screen[row] = ""
        elif token:
            line = screen[row].ljust(col)
            screen[row] = line[:col] + token + line[col + len(token) :]
            col += len(token)
    return screen


def run_at_a_terminal(*argv: str) -> str:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "execution_ledger.adapters.cli.main", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other end closed: the command is done
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=120) == 0
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.usefixtures("ledger_env")
def test_the_demos_live_table_is_left_on_the_screen_once() -> None:
    output = run_at_a_terminal("demo")
    assert output.count(TITLE) > 1  # it was redrawn live
    screen = final_screen(output)
    assert sum(TITLE in line for line in screen) == 1, "\n".join(screen)
    assert any("results" in line for line in screen)


@pytest.mark.usefixtures("ledger_env")
def test_piped_the_demo_prints_the_results_title_on_a_line_of_its_own() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "execution_ledger.adapters.cli.main", "demo"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.strip() == TITLE for line in lines) == 1
    assert sum(line.strip() == "results" for line in lines) == 1
