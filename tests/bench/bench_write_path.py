"""Benchmark: the write path (issue 11), each figure beside a ceiling measured in the same run.

- HTTP enqueue: ``ledger serve`` (its own process; the registry pauses the default queue,
  so only the enqueue path is loaded) against a plain aiohttp server doing one
  ``INSERT … RETURNING id`` + commit per request through a psycopg pool of 8 (also its own
  process); the same load generator (``http_load.py``, 20 clients) against each:
  tasks/s, p50, p99, ratio. ``--api-only``: the ledger's API alone, without worker node.
- bulk enqueue: ``Ledger.enqueue_graph`` of 1,000 independent tasks per call, tasks/s
  against single-row INSERT + COMMIT from one client (``common.raw_insert_rate``).
- parallel appends: 4 processes, each saving batches of 100 planned tasks through
  ``EventStore.save`` at once (started together on a barrier), against 4 processes
  inserting the same kind of rows (the stored events of planned tasks) with plain psycopg
  into a table shaped like ``ledger_events``, 100 rows per transaction: events/s, ratio.

    python -m tests.bench.bench_write_path [--seconds 10] [--clients 20] [--tasks 20000]
        [--processes 4] [--batches 50] [--api-only] [--only http,bulk,appends]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import queue
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from execution_ledger.adapters.ledger import SYSTEM
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.access import AccessDenial
from execution_ledger.domain.submission import TaskRequest
from tests.bench.common import free_port, fresh_runtime, print_columns, raw_insert_rate
from tests.bench.http_load import LoadResult, run_load
from tests.bench.http_servers import ceiling_table_statement, running

CONFIG = """
[queues.default]
concurrency = 10
paused = true

[task_types.echo]
adapter = "python"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
"""
CEILING_TABLE = "bench_http_ceiling"
RAW_EVENTS_TABLE = "bench_raw_events"
PART_NAMES = ("http", "bulk", "appends")


@dataclass(frozen=True)
class Row:
    """One line of the printed table."""

    measure: str
    ledger: str
    ceiling: str
    ratio: float
    target: str


def http_enqueue(clients: int, seconds: float, kind: str) -> tuple[LoadResult, LoadResult]:
    """The same load against the ledger's server (``kind``: ``ledger`` or ``api``), then
    against the ceiling server; both on the benchmark's fresh schema."""
    with fresh_runtime(CONFIG) as runtime:
        schema = runtime.settings.schema
        port = free_port()
        with running(kind, port):
            ledger = asyncio.run(run_load(port, clients, seconds))
        with runtime.store.transaction() as cur:
            cur.execute(ceiling_table_statement(schema, CEILING_TABLE))
        port = free_port()
        with running("ceiling", port, schema, CEILING_TABLE):
            ceiling = asyncio.run(run_load(port, clients, seconds))
    for name, result in (("ledger", ledger), ("ceiling", ceiling)):
        if result.failures:
            print(f"  {name}: failed answers {result.failures}: {result.first_failure}")
    return ledger, ceiling


def bulk_enqueue(tasks: int, per_call: int = 1000) -> float:
    """Tasks/s of ``enqueue_graph`` with ``per_call`` independent tasks per call."""
    with fresh_runtime(CONFIG) as runtime:
        calls = [
            [TaskRequest("echo", {"i": i}) for i in range(start, min(tasks, start + per_call))]
            for start in range(0, tasks, per_call)
        ]
        started = time.perf_counter()
        for requests in calls:
            runtime.ledger.enqueue_graph(requests)
        return tasks / (time.perf_counter() - started)


def planned_batches(runtime: Runtime, batches: int, size: int, kind: str) -> list[list[Any]]:
    """``batches`` lists of ``size`` unsaved aggregates with one pending event each: planned
    tasks (``kind`` "tasks": their dispatch-queue rows are written too), or access denials
    ("log": the events alone, as in the library's measurement)."""
    if kind == "log":
        return [
            [AccessDenial.record("bench", "append", f"event {i}") for i in range(size)]
            for _ in range(batches)
        ]
    return [
        runtime.ledger._plan([TaskRequest("echo", {"i": i}) for i in range(size)], SYSTEM)[0]
        for _ in range(batches)
    ]


def append_through_store(
    batches: int, size: int, kind: str, barrier: Any, results: Any
) -> None:
    """A child process: plan its batches, wait for the others, save each batch."""
    runtime = open_runtime(pool_size=2)
    try:
        planned = planned_batches(runtime, batches, size, kind)
        barrier.wait()
        started = time.time()
        for tasks in planned:
            runtime.store.save(*tasks)
        results.put((batches * size, started, time.time()))
    finally:
        runtime.close()


def append_raw(batches: int, size: int, kind: str, barrier: Any, results: Any) -> None:
    """A child process: the stored events of its planned batches, inserted with plain
    psycopg (``executemany``, pipelined by psycopg), one transaction per batch."""
    runtime = open_runtime(pool_size=1)
    try:
        mapper = runtime.store.app.mapper
        rows = [
            [
                (s.originator_id, s.originator_version, s.topic, s.state)
                for s in map(mapper.to_stored_event, (e for t in tasks for e in t.collect_events()))
            ]
            for tasks in planned_batches(runtime, batches, size, kind)
        ]
        schema, url = runtime.settings.schema, runtime.database_url
    finally:
        runtime.close()
    insert = sql.SQL(
        "INSERT INTO {} (originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s)"
    ).format(sql.Identifier(schema, RAW_EVENTS_TABLE))
    with psycopg.connect(url) as conn:
        cursor = conn.cursor()
        barrier.wait()
        started = time.time()
        for batch in rows:
            with conn.transaction():
                cursor.executemany(insert, batch)
        results.put((sum(map(len, rows)), started, time.time()))


def raw_events_table(schema: str) -> list[sql.Composed]:
    """A table shaped like the library's ``ledger_events``, with its unique position index."""
    table = sql.Identifier(schema, RAW_EVENTS_TABLE)
    return [
        sql.SQL(
            "CREATE TABLE {} (originator_id uuid NOT NULL, originator_version bigint NOT NULL, "
            "topic text, state bytea, notification_id bigserial, "
            "PRIMARY KEY (originator_id, originator_version))"
        ).format(table),
        sql.SQL("CREATE UNIQUE INDEX ON {} (notification_id ASC)").format(table),
    ]


def in_processes(target: Any, processes: int, batches: int, size: int, kind: str) -> float:
    """Events/s of ``processes`` spawned children running ``target`` together: all their
    events over the time from the first start to the last end."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    children = [
        context.Process(target=target, args=(batches, size, kind, barrier, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        outcomes = _collect(results, children)
    finally:
        for child in children:
            child.join(timeout=60)
            if child.is_alive():  # its barrier never broke: a sibling failed
                child.kill()
                child.join()
    events = sum(o[0] for o in outcomes)
    return events / (max(o[2] for o in outcomes) - min(o[1] for o in outcomes))


def _collect(results: Any, children: list[Any]) -> list[tuple[int, float, float]]:
    """Each child's (events, start, end); raise as soon as one exits without it."""
    outcomes: list[tuple[int, float, float]] = []
    while len(outcomes) < len(children):
        try:
            outcomes.append(results.get(timeout=0.5))
        except queue.Empty:
            failed = [c.exitcode for c in children if c.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"an appending process failed (exit codes {failed})") from None
    return outcomes


def parallel_appends(
    processes: int, batches: int, kind: str, size: int = 100
) -> tuple[float, float]:
    """Events/s through the event store, and raw, by ``processes`` processes at once."""
    with fresh_runtime(CONFIG) as runtime:
        with runtime.store.transaction() as cur:
            for statement in raw_events_table(runtime.settings.schema):
                cur.execute(statement)
        ledger = in_processes(append_through_store, processes, batches, size, kind)
        raw = in_processes(append_raw, processes, batches, size, kind)
    return ledger, raw


def print_table(rows: list[Row]) -> None:
    lines = [("measure", "ledger", "ceiling", "ratio", "target"), *map(_cells, rows)]
    print_columns(lines)


def _cells(row: Row) -> tuple[str, ...]:
    return (row.measure, row.ledger, row.ceiling, f"{row.ratio:.2f}x", row.target)


def http_rows(ledger: LoadResult, ceiling: LoadResult, clients: int) -> list[Row]:
    return [
        Row(
            f"HTTP enqueue, {clients} clients, tasks/s",
            f"{ledger.rate:,.0f}",
            f"{ceiling.rate:,.0f}",
            ledger.rate / ceiling.rate,
            ">= 0.7x",
        ),
        Row(
            "HTTP enqueue p50 / p99, ms",
            f"{ledger.ms(50):.1f} / {ledger.ms(99):.1f}",
            f"{ceiling.ms(50):.1f} / {ceiling.ms(99):.1f}",
            ledger.ms(50) / ceiling.ms(50),
            "p50 <= 30 ms",
        ),
    ]


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="HTTP load per server")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--api-only", action="store_true", help="HTTP API without worker node")
    parser.add_argument("--tasks", type=int, default=20_000, help="bulk enqueue, in all")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--batches", type=int, default=50, help="per appending process")
    parser.add_argument("--only", default=",".join(PART_NAMES), help="comma-separated parts")
    options = parser.parse_args()
    unknown = set(options.only.split(",")) - set(PART_NAMES)
    if unknown:
        parser.error(f"unknown part {sorted(unknown)[0]!r}; parts: {', '.join(PART_NAMES)}")
    if (
        min(options.seconds, options.clients, options.tasks, options.processes, options.batches)
        <= 0
    ):
        parser.error("--seconds, --clients, --tasks, --processes and --batches must be positive")
    return options


def main() -> None:
    options = parse_options()
    parts = options.only.split(",")
    rows: list[Row] = []
    if "http" in parts:
        kind = "api" if options.api_only else "ledger"
        ledger, ceiling = http_enqueue(options.clients, options.seconds, kind)
        rows += http_rows(ledger, ceiling, options.clients)
    if "bulk" in parts:
        raw = raw_insert_rate()
        rate = bulk_enqueue(options.tasks)
        rows.append(
            Row("bulk enqueue, 1,000 per call, tasks/s", f"{rate:,.0f}", f"{raw:,.0f}",
                rate / raw, ">= 4x")
        )  # fmt: skip
    if "appends" in parts:
        for kind, what in (("log", "events alone"), ("tasks", "new tasks")):
            ledger_rate, raw_rate = parallel_appends(options.processes, options.batches, kind)
            rows.append(
                Row(f"{options.processes} processes, batches of 100 {what}, events/s",
                    f"{ledger_rate:,.0f}", f"{raw_rate:,.0f}", ledger_rate / raw_rate, ">= 0.7x")
            )  # fmt: skip
    print_table(rows)


if __name__ == "__main__":
    main()
