"""Benchmark: readiness graph updates cost in proportion to the edges touched.

A layered DAG (``width`` tasks per layer, each depending on two tasks of the layer above)
is enqueued atomically, then completed layer by layer; only the readiness projection's
work (with the dependency cascade appending the unblock events) is timed. If an update
scanned all tasks, the cost per edge would grow with the graph; it must stay flat.

    python -m tests.bench.bench_readiness
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from tests.bench.common import fresh_runtime, raw_insert_rate

WIDTH = 100


def layered_dag(tasks: int) -> list[TaskRequest]:
    requests = []
    for index in range(tasks):
        layer, slot = divmod(index, WIDTH)
        deps = (
            ()
            if layer == 0
            else (f"t{(layer - 1) * WIDTH + slot}", f"t{(layer - 1) * WIDTH + (slot + 1) % WIDTH}")
        )
        requests.append(TaskRequest("echo", {"i": index}, ref=f"t{index}", depends_on=deps))
    return requests


def complete_layer(runtime: Runtime, ids: list) -> None:
    now = datetime.now(UTC)
    tasks = [runtime.store.load(task_id) for task_id in ids]
    for task in tasks:
        attempt = task.start("bench", now + timedelta(seconds=60), now)
        task.succeed(attempt, {"ok": True})
    runtime.store.save(*tasks)


def measure(tasks: int) -> dict[str, float]:
    with fresh_runtime() as runtime:
        started = time.perf_counter()
        created = runtime.ledger.enqueue_graph(layered_dag(tasks))
        enqueue_seconds = time.perf_counter() - started
        readiness = runtime.runners["readiness"]
        started = time.perf_counter()
        readiness.catch_up()
        projected_enqueue = time.perf_counter() - started
        projection_seconds = 0.0
        for layer in range(tasks // WIDTH):
            complete_layer(runtime, [t.id for t in created[layer * WIDTH : (layer + 1) * WIDTH]])
            started = time.perf_counter()
            readiness.catch_up()
            projection_seconds += time.perf_counter() - started
        edges = 2 * (tasks - WIDTH)
        return {
            "tasks": tasks,
            "enqueue_tasks_per_s": tasks / enqueue_seconds,
            "project_enqueue_us_per_task": 1e6 * projected_enqueue / tasks,
            "complete_us_per_edge": 1e6 * projection_seconds / edges,
        }


def main() -> None:
    raw = raw_insert_rate()
    print(f"raw ceiling: {raw:,.0f} single-row INSERT+COMMIT/s")
    header = ("tasks", "enqueue tasks/s", "x raw", "project enqueue us/task", "complete us/edge")
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    for size in (1_000, 10_000):
        r = measure(size)
        cells = (
            f"{r['tasks']:,}",
            f"{r['enqueue_tasks_per_s']:,.0f}",
            f"{r['enqueue_tasks_per_s'] / raw:.2f}",
            f"{r['project_enqueue_us_per_task']:,.0f}",
            f"{r['complete_us_per_edge']:,.0f}",
        )
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
