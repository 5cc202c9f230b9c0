"""Worker nodes for the benchmarks, each in a process of its own, built as ``ledger worker``
builds one (``WorkerNode`` with its projections in their child process) on the ledger the
``LEDGER_*`` variables name.

``NodeProcesses(n, concurrency)`` spawns ``n`` of them and waits until each has opened its
runtime (``ready``) (``projections=False``: nodes as ``ledger worker --no-projections``
runs them, with no projection process); ``go()`` lets them all start their node at once (the node starts its
projection process then, so projections start with the worker); ``check()`` raises if one
has exited; ``stop()`` sets each
node's stop event, as SIGTERM does for ``ledger worker``, and waits for the processes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from typing import Any

START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


def run_node(concurrency: int, projections: bool, ready: Any, go: Any, stop: Any) -> None:
    """The child: open the runtime, say ready, wait for go, run the node until stop."""
    from execution_ledger.adapters.node import WorkerNode, stop_when_orphaned
    from execution_ledger.adapters.runtime import open_runtime
    from execution_ledger.adapters.startup_heap import freeze_startup_heap

    runtime = open_runtime()
    node = WorkerNode(
        runtime,
        concurrency=concurrency,
        projections=projections,
        projection_process=projections,
    )
    freeze_startup_heap()  # as ``ledger worker`` does
    ready.set()
    go.wait()

    parent = os.getppid()

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        # A benchmark killed without stopping its nodes leaves none running behind it.
        orphaned = threading.Event()
        stop_when_orphaned(orphaned, parent)

        def wait_for_stop() -> None:
            while not stop.wait(0.5) and not orphaned.is_set():
                pass
            loop.call_soon_threadsafe(stopping.set)

        threading.Thread(target=wait_for_stop, daemon=True).start()
        await node.run(stopping)

    try:
        asyncio.run(main())
    finally:
        runtime.close()


def _wait_ready(ready: Any, process: Any) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready.wait(0.2):
        if not process.is_alive():
            raise RuntimeError(f"a worker node process exited with {process.exitcode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker node process {process.pid} did not get ready")


class NodeProcesses:
    """``count`` worker node processes of ``concurrency`` slots each."""

    def __init__(self, count: int, concurrency: int, projections: bool = True) -> None:
        context = multiprocessing.get_context("spawn")
        self.go_event = context.Event()
        self.stop_event = context.Event()
        self.readies = [context.Event() for _ in range(count)]
        self.processes = [
            context.Process(
                target=run_node,
                args=(concurrency, projections, r, self.go_event, self.stop_event),
            )
            for r in self.readies
        ]

    def __enter__(self) -> NodeProcesses:
        for process in self.processes:
            process.start()
        try:
            for ready, process in zip(self.readies, self.processes, strict=True):
                _wait_ready(ready, process)
        except BaseException:
            self.stop()
            raise
        return self

    def go(self) -> None:
        self.go_event.set()

    def check(self) -> None:
        """Raise if a node process has exited (a benchmark would otherwise wait for ever)."""
        for process in self.processes:
            if not process.is_alive():
                raise RuntimeError(f"a worker node process exited with {process.exitcode}")

    def stop(self) -> None:
        self.go_event.set()  # a node still waiting to start ends at once
        self.stop_event.set()
        for process in self.processes:
            process.join(STOP_TIMEOUT)
            if process.is_alive():
                process.kill()
                process.join()

    def __exit__(self, *exc: object) -> None:
        self.stop()
