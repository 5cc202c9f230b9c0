"""A worker killed with SIGKILL leaves its shell scratch directory behind; the next worker node
to start on the host removes it, and never the directory of a process that still runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from execution_ledger.adapters.executors.shell_scratch import parent_dir, remove_orphans
from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.runtime import Runtime

# A child process that runs one shell task: its command writes its working directory and
# process group to the file named by argv[1], then sleeps.
CHILD = """
import asyncio, sys, uuid
from execution_ledger.adapters.executors.shell import ShellExecutor
from execution_ledger.domain.execution import Execution
from execution_ledger.domain.timeouts import Timeouts

script = 'printf "%s %s" "$(pwd)" "$$" > "$1.part" && mv "$1.part" "$1"; exec sleep 120'
settings = {"argv": ["/bin/sh", "-c", script, "_", "{args[out]}"]}
execution = Execution(uuid.uuid4(), 1, "t", {"out": sys.argv[1]}, settings, Timeouts(300.0))
asyncio.run(ShellExecutor().run(execution))
"""


class ShellWorker:
    """A child process running a shell task in ``root``, and where that task runs."""

    def __init__(self, root: Path, report: Path) -> None:
        env = {**os.environ, "TMPDIR": str(root)}
        self.process = subprocess.Popen([sys.executable, "-c", CHILD, str(report)], env=env)
        deadline = time.monotonic() + 60
        while not report.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the shell task did not start ({self.process.returncode})")
            time.sleep(0.02)
        workdir, group = report.read_text().split()
        self.workdir, self.group = Path(workdir), int(group)

    def kill(self) -> None:
        """SIGKILL the worker (its command lives on in its own session: kill that too)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.stop_command()

    def stop_command(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.group, signal.SIGKILL)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[ShellWorker]]:
    started: list[ShellWorker] = []
    yield started
    for worker in started:
        worker.process.kill()
        worker.process.wait()
        worker.stop_command()


def test_a_killed_worker_leaves_its_scratch_directory_in_a_parent_named_by_its_pid(
    tmp_path: Path, workers: list[ShellWorker]
) -> None:
    worker = ShellWorker(tmp_path, tmp_path / "report")
    workers.append(worker)

    worker.kill()

    assert worker.workdir.is_dir()
    assert worker.workdir.parent.parent == tmp_path
    assert f".{worker.process.pid}." in worker.workdir.parent.name


def test_remove_orphans_removes_a_killed_workers_directories_and_keeps_a_live_ones(
    tmp_path: Path, workers: list[ShellWorker]
) -> None:
    killed = ShellWorker(tmp_path, tmp_path / "killed")
    live = ShellWorker(tmp_path, tmp_path / "live")
    workers.extend([killed, live])
    killed.kill()
    own = parent_dir(tmp_path)  # this (live) process's own parent

    removed = remove_orphans(tmp_path)

    assert removed == [killed.workdir.parent]
    assert not killed.workdir.parent.exists()
    assert live.workdir.is_dir() and own.is_dir()


def test_remove_orphans_leaves_names_it_does_not_own_alone(tmp_path: Path) -> None:
    other_host = tmp_path / "ledger-shell.000000000000.999999.1"
    old_style = tmp_path / "ledger-shell-abc123"
    other_host.mkdir()
    old_style.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("x")
    host = parent_dir(tmp_path).name.split(".")[1]  # this host's tag, a pid that is gone
    linked = tmp_path / f"ledger-shell.{host}.999998.1"
    linked.symlink_to(target)

    assert remove_orphans(tmp_path) == []
    assert other_host.is_dir() and old_style.is_dir() and (target / "keep").exists()


@pytest.mark.asyncio
async def test_a_worker_node_start_removes_a_killed_workers_scratch_directory(
    runtime: Runtime,
    tmp_path: Path,
    workers: list[ShellWorker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    killed = ShellWorker(tmp_path, tmp_path / "killed")
    live = ShellWorker(tmp_path, tmp_path / "live")
    workers.extend([killed, live])
    killed.kill()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    node = WorkerNode(runtime, projections=False, learn_hooks=False)
    stop = asyncio.Event()
    running = asyncio.create_task(node.run(stop))
    try:
        for _ in range(500):  # wait for the node's first sweep
            if not killed.workdir.parent.exists():
                break
            await asyncio.sleep(0.02)
        assert not killed.workdir.parent.exists()
        assert live.workdir.is_dir()
    finally:
        stop.set()
        await running
