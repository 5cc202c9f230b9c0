"""Benchmark: the execution engine, beside the raw ceiling measured in the same run.

- drain: 20,000 no-op tasks, already enqueued, run by one worker node at concurrency 10
  and 50 (tasks/s from the node's start to the last task's end; also to the task view
  showing them all, as the projections run in the node's lower-priority child process);
- latency: enqueue -> start at 50 tasks/s (p50/p95/p99 from the events' timestamps);
- chain: a 200-task dependency chain, time per hop (a task's start after its parent's end).

    python -m tests.bench.bench_worker [--tasks 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from psycopg import sql

from adapters.node import WorkerNode
from adapters.runtime import Runtime
from domain.submission import TaskRequest
from tests.bench.common import fresh_runtime, raw_insert_rate

CONFIG = """
[queues.default]
concurrency = 1000

[task_types.noop]
adapter = "python"
settings = { callable = "adapters.executors.builtin_tasks:noop" }
"""


def count(runtime: Runtime, query: str) -> int:
    with runtime.store.transaction() as cur:
        composed = sql.SQL(query).format(schema=sql.Identifier(runtime.settings.schema))
        return int(cur.execute(composed).fetchone()["n"])  # type: ignore[index]


def unfinished(runtime: Runtime) -> int:
    """Tasks not yet ended (the dispatch queue holds every task until its end event)."""
    return count(runtime, "SELECT count(*) AS n FROM {schema}.dispatch_queue")


def projected_successes(runtime: Runtime) -> int:
    return count(runtime, "SELECT count(*) AS n FROM {schema}.task_view WHERE state = 'succeeded'")


async def run_node(
    runtime: Runtime, concurrency: int, until: Any, producer: Any = None
) -> tuple[float, float]:
    """Run a worker node as ``ledger worker`` does (projections in a child process) until
    ``until()``; return the seconds to that, and to the task view showing every task."""
    stop = asyncio.Event()
    node = WorkerNode(runtime, concurrency=concurrency, projection_process=True)
    running = asyncio.create_task(node.run(stop))
    feeding = asyncio.create_task(producer()) if producer else None
    started = time.perf_counter()
    try:
        while not await asyncio.to_thread(until):
            await asyncio.sleep(0.05)
        done = time.perf_counter() - started
        while await asyncio.to_thread(unprojected, runtime):
            await asyncio.sleep(0.05)
        return done, time.perf_counter() - started
    finally:
        stop.set()
        if feeding:
            feeding.cancel()
        await asyncio.gather(running, return_exceptions=True)


def unprojected(runtime: Runtime) -> bool:
    """The task view still lacks some task's end."""
    return bool(
        count(
            runtime,
            "SELECT count(*) AS n FROM {schema}.task_view "
            "WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped')",
        )
    )


def drain(tasks: int, concurrency: int) -> tuple[float, float]:
    """Tasks/s from the node's start to the last task's end; and to the task view showing
    them all (the projections, in their lower-priority process, may trail the worker)."""
    with fresh_runtime(CONFIG) as runtime:
        for start in range(0, tasks, 1000):
            batch = [TaskRequest("noop", {"i": i}) for i in range(start, min(tasks, start + 1000))]
            runtime.ledger.enqueue_graph(batch)
        runtime.catch_up()
        ran, projected = asyncio.run(
            run_node(runtime, concurrency, lambda: not unfinished(runtime))
        )
        assert projected_successes(runtime) == tasks, "every task must have succeeded"
        return tasks / ran, tasks / projected


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def latency(rate: float = 50.0, tasks: int = 500) -> dict[str, float]:
    with fresh_runtime(CONFIG) as runtime:
        ids = []

        async def produce() -> None:
            for i in range(tasks):
                task = await asyncio.to_thread(
                    runtime.ledger.enqueue, TaskRequest("noop", {"i": i})
                )
                ids.append(task.id)
                await asyncio.sleep(1 / rate)

        asyncio.run(
            run_node(runtime, 10, lambda: len(ids) == tasks and not unfinished(runtime), produce)
        )
        waits = []
        for task_id in ids:
            history = [e.event for e in runtime.store.history(task_id)]
            started = next(e for e in history if type(e).__name__ == "TaskStarted")
            waits.append((started.timestamp - history[0].timestamp).total_seconds() * 1000)
        return {p: percentile(waits, p) for p in (50, 95, 99)} | {"mean": statistics.mean(waits)}


def chain(length: int = 200) -> float:
    with fresh_runtime(CONFIG) as runtime:
        requests = [TaskRequest("noop", ref="t0")] + [
            TaskRequest("noop", ref=f"t{i}", depends_on=(f"t{i - 1}",)) for i in range(1, length)
        ]
        tasks = runtime.ledger.enqueue_graph(requests)
        asyncio.run(run_node(runtime, 10, lambda: not unfinished(runtime)))
        first = runtime.store.history(tasks[0].id)
        last = runtime.store.history(tasks[-1].id)
        start = next(e.event.timestamp for e in first if type(e.event).__name__ == "TaskStarted")
        return (last[-1].event.timestamp - start).total_seconds() * 1000 / (length - 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20_000)
    options = parser.parse_args()
    raw = raw_insert_rate()
    print(f"raw ceiling: {raw:,.0f} single-row INSERT+COMMIT/s")
    for concurrency in (10, 50):
        rate, projected = drain(options.tasks, concurrency)
        print(
            f"drain {options.tasks:,} no-op tasks, concurrency {concurrency}: "
            f"{rate:,.0f} tasks/s ({rate / raw:.2f} x raw); all in the task view: "
            f"{projected:,.0f} tasks/s"
        )
    lat = latency()
    print(
        f"enqueue->start at 50/s: p50 {lat[50]:.1f} ms, p95 {lat[95]:.1f} ms, p99 {lat[99]:.1f} ms"
    )
    print(f"chain of 200: {chain():.1f} ms per hop")


if __name__ == "__main__":
    main()
