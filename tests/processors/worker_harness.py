"""Running a real worker node inside a test: start it, wait for a condition, stop it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from uuid import UUID

from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.submission import TaskRequest


def run_nodes_until(
    runtime: Runtime,
    done: Callable[[], bool],
    timeout: float = 15.0,
    nodes: int = 1,
    **node_options: object,
) -> float:
    """Run ``nodes`` worker nodes until ``done()`` holds; return the seconds it took."""

    async def main() -> float:
        stop = asyncio.Event()
        workers = [WorkerNode(runtime, **node_options) for _ in range(nodes)]  # type: ignore[arg-type]
        running = [asyncio.create_task(w.run(stop)) for w in workers]
        started = time.monotonic()
        try:
            while not await asyncio.to_thread(done):
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"condition not met within {timeout} s")
                for task in running:
                    if task.done():
                        task.result()  # surfaces a crashed node
                await asyncio.sleep(0.05)
            return time.monotonic() - started
        finally:
            stop.set()
            await asyncio.gather(*running, return_exceptions=True)

    return asyncio.run(main())


def runtime_with_config(tmp_path: Path, text: str) -> Runtime:
    path = tmp_path / "ledger.toml"
    path.write_text(text)
    return open_runtime(path, pool_size=4)


def run_built_nodes_until(
    build: Callable[[], list[WorkerNode]],
    done: Callable[[], bool],
    timeout: float = 15.0,
) -> None:
    """Run the worker nodes ``build()`` makes (inside the event loop, so a test can set
    each one up its own way) until ``done()`` holds; a node that crashes fails the wait."""

    async def main() -> None:
        stop = asyncio.Event()
        running = [asyncio.create_task(node.run(stop)) for node in build()]
        deadline = time.monotonic() + timeout
        try:
            while not await asyncio.to_thread(done):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"condition not met within {timeout} s")
                for task in running:
                    if task.done():
                        task.result()
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(*running, return_exceptions=True)

    asyncio.run(main())


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Poll ``condition`` every 50 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting{': ' + what if what else ''}"
        time.sleep(0.05)


def worker_is_up(runtime: Runtime) -> bool:
    """Whether a worker node has registered on the runtime's schema."""
    from psycopg import sql

    with runtime.store.transaction() as cursor:
        table = sql.Identifier(runtime.settings.schema, "worker_nodes")
        row = cursor.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(table)).fetchone()
    return bool(row and row["n"])


def run_workload(
    runtime: Runtime, requests: Sequence[TaskRequest], timeout: float = 60.0
) -> list[UUID]:
    """Run a worker node (concurrency 10); enqueue ``requests`` at once as soon as it is up
    (its start is no part of their waits); return their ids once every one has ended."""
    ids: list[UUID] = []

    def all_ended() -> bool:
        if not ids:
            if not worker_is_up(runtime):
                return False
            ids.extend(task.id for task in runtime.ledger.enqueue_graph(requests))
        return all(runtime.ledger.task(i).state.is_terminal for i in ids)

    run_nodes_until(runtime, all_ended, timeout=timeout, concurrency=10)
    return ids
