"""Benchmark: replay of the learning dataset against the raw read rate of the same table.

Builds a log of about ``--events`` events without a worker (tasks enqueued in graphs of
5,000 independent tasks, then started and finished in one save per graph; one task in ten
fails once and is retried), then measures in the same run:

- the raw read rate: plain psycopg, ``SELECT * FROM <schema>.ledger_events ORDER BY
  notification_id`` through a server-side cursor (5,000 rows per fetch), rows counted only;
- the replay rate: ``Replay.write_file`` to a JSONL file (or ``--format csv`` /
  ``parquet``) in a temporary directory, in a child process so that its peak RSS is the
  replay's own (``VmHWM`` of ``/proc/self/status``: ``ru_maxrss`` would count the parent's
  peak too, which a child started by fork or vfork inherits on Linux).

    python -m tests.bench.bench_replay                 # 200,000 events
    python -m tests.bench.bench_replay --events 1000000
    python -m tests.bench.bench_replay --format parquet
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from tests.bench.common import fresh_runtime

GRAPH = 5000
FAIL_EVERY = 10
TARGET_RATIO = 0.5
TARGET_PEAK_MB = 300


def build_log(runtime: Runtime, events: int) -> int:
    """Append about ``events`` events; return the head position."""
    written = 0
    index = 0
    while written < events:
        requests = [
            TaskRequest("echo", {"i": index + n, "payload": "x" * (n % 64)}) for n in range(GRAPH)
        ]
        index += GRAPH
        tasks = runtime.ledger.enqueue_graph(requests)
        written += len(tasks)
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=60)
        for n, task in enumerate(tasks):
            attempt = task.start(f"bench-node-{n % 4}", lease, now)
            if n % FAIL_EVERY == 0:
                task.fail(attempt, "RuntimeError", "boom", details={"exit_code": 1})
                task.schedule_retry(now)
                attempt = task.start(f"bench-node-{n % 4}", lease, now)
            task.succeed(attempt, {"ok": True, "n": n}, details={"exit_code": 0})
        pending = sum(len(t.pending_events) for t in tasks)
        runtime.store.save(*tasks)
        written += pending
    return runtime.store.head_position()


def raw_read(database_url: str, schema: str) -> tuple[int, float]:
    """Rows and seconds of a plain server-side-cursor scan of the events table."""
    with psycopg.connect(database_url) as conn, conn.cursor(name="bench_raw_read") as cursor:
        cursor.itersize = 5000
        started = time.perf_counter()
        cursor.execute(
            sql.SQL("SELECT * FROM {} ORDER BY notification_id").format(
                sql.Identifier(schema, "ledger_events")
            )
        )
        rows = sum(1 for _ in cursor)
        return rows, time.perf_counter() - started


def replay_in_child(out: Path, fmt: str) -> dict[str, float]:
    """Run ``--child`` in a fresh process (same database and schema, from the environment)."""
    completed = subprocess.run(
        [sys.executable, "-m", "tests.bench.bench_replay", "--child", str(out), "--format", fmt],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def child(out: Path, fmt: str) -> None:
    from execution_ledger.adapters.dataset.replay import Replay
    from execution_ledger.adapters.runtime import open_runtime

    runtime = open_runtime(pool_size=2)
    try:
        replay = Replay(runtime.store)
        started = time.perf_counter()
        replay.write_file(out, fmt)
        seconds = time.perf_counter() - started
    finally:
        runtime.close()
    peak_kib = own_peak_kib()
    print(
        json.dumps(
            {
                "events": replay.position,
                "task_events": replay.events,
                "rows": replay.rows,
                "seconds": seconds,
                "peak_mb": peak_kib / 1024,
                "bytes": out.stat().st_size,
            }
        )
    )


def own_peak_kib() -> int:
    """This process's peak resident set size in KiB since it started its program."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(events: int, fmt: str) -> None:
    with fresh_runtime() as runtime:
        started = time.perf_counter()
        head = build_log(runtime, events)
        build_seconds = time.perf_counter() - started
        print(f"built {head:,} events in {build_seconds:.0f} s", file=sys.stderr)
        url, schema = runtime.database_url, runtime.settings.schema
        with tempfile.TemporaryDirectory() as directory:
            out = Path(directory) / f"dataset.{fmt}"
            raw_read(url, schema)  # warm the cache: both measures then read from memory
            raws, replays = [], []
            for _ in range(2):
                rows, seconds = raw_read(url, schema)
                raws.append(rows / seconds)
                replays.append(replay_in_child(out, fmt))
        raw_rate = max(raws)
        best = max(replays, key=lambda r: r["events"] / r["seconds"])
        replay_rate = best["events"] / best["seconds"]
        peak = max(r["peak_mb"] for r in replays)
        print(
            "| events | raw read events/s | replay events/s | replay / raw | replay peak RSS "
            f"| rows | {fmt} size |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {head:,} | {raw_rate:,.0f} | {replay_rate:,.0f} | {replay_rate / raw_rate:.2f} "
            f"(target ≥ {TARGET_RATIO}) | {peak:,.0f} MB (target < {TARGET_PEAK_MB}) "
            f"| {best['rows']:,} | {best['bytes'] / 1e6:,.0f} MB |"
        )
        print(
            f"raw runs: {', '.join(f'{r:,.0f}' for r in raws)} events/s; replay runs: "
            + ", ".join(f"{r['events'] / r['seconds']:,.0f}" for r in replays)
            + " events/s",
            file=sys.stderr,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--format", choices=("jsonl", "csv", "parquet"), default="jsonl")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child is not None:
        child(options.child, options.format)
    else:
        measure(options.events, options.format)


if __name__ == "__main__":
    main()
