"""Benchmark: what a pause before a call costs on this machine, for the ledger's enqueue and
for the raw ceiling alike.

The latency targets are fixed milliseconds measured at 50 tasks/s, so every call there comes
after 20 ms of idleness. On a virtual machine a process that slept runs its next
instructions slower (cold caches, a descheduled or slowed-down core): this prints, for pauses
of 0, 1, 5 and 20 ms before each call, the median time of

- ``Ledger.enqueue`` of one task (planning, mapping, the group commit's transaction), and of
  its planning alone (pure Python, no I/O);
- the ceiling: one plain psycopg ``INSERT`` + ``COMMIT`` of one row into the same PostgreSQL;

and each as a multiple of itself with no pause. Where the ceiling slows down as much as the
enqueue, the pause's cost is the machine's, not the ledger's design.

    LEDGER_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python -m tests.bench.bench_idle \
        [--calls 300]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from uuid import uuid4

import psycopg
from psycopg import sql

from execution_ledger.adapters.ledger import SYSTEM
from execution_ledger.domain.submission import TaskRequest
from tests.bench.common import database_url, fresh_runtime, print_columns

CONFIG = """
[task_types.echo]
adapter = "python"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
"""
PAUSES_MS = (0.0, 1.0, 5.0, 20.0)


def median_ms(call: Callable[[], object], pause_ms: float, calls: int) -> float:
    """The median time of ``call`` (ms), each after ``pause_ms`` of sleep."""
    for _ in range(10):  # warm: statements prepared, connections open
        call()
    times = []
    for _ in range(calls):
        if pause_ms:
            time.sleep(pause_ms / 1000)
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per pause and measure")
    calls = parser.parse_args().calls
    table = f"bench_raw_{uuid4().hex[:8]}"
    with (
        fresh_runtime(CONFIG) as runtime,
        psycopg.connect(database_url(), autocommit=True) as raw,
    ):
        raw.execute(sql.SQL("CREATE TABLE {} (id bigint, body text)").format(sql.Identifier(table)))
        insert = sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(sql.Identifier(table))
        ledger = runtime.ledger
        request = TaskRequest("echo", {"n": 1})
        measures: dict[str, Callable[[], object]] = {
            "Ledger.enqueue, one task": lambda: ledger.enqueue(request),
            "... its planning alone": lambda: ledger._plan([request], SYSTEM),
            "ceiling: INSERT + COMMIT of one row": lambda: raw.execute(insert, (1, "x")),
        }
        try:
            results = {
                name: [median_ms(call, pause, calls) for pause in PAUSES_MS]
                for name, call in measures.items()
            }
        finally:
            raw.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    header = ["median ms, after a pause of", *(f"{p:g} ms" for p in PAUSES_MS)]
    rows = [
        [name, *(f"{v:.3f} ({v / values[0]:.1f}x)" for v in values)]
        for name, values in results.items()
    ]
    print_columns([header, *rows])


if __name__ == "__main__":
    main()
