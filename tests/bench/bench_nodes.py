"""Several nodes on one PostgreSQL (issue 16): one API node and N worker nodes, each a
process of its own on this machine, under the same HTTP load; its throughput and the log's
append rate with three worker nodes beside the same with one.

    LEDGER_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python -m tests.bench.bench_nodes \
        [--seconds 15] [--clients 20] [--workers 1,3]

For each worker count, on a fresh schema: the ledger's HTTP API alone in its own process
(``python -m tests.bench.http_servers api``: no worker and no projections of its own),
N worker nodes built as ``ledger worker`` builds them (projections in their child process;
the N projection processes stand by for each other), then 20 clients post ``echo`` tasks
for the given seconds (after a 1 s warm-up). Measured: tasks accepted per second (2xx
answers), tasks ended per second (from the load's start until the dispatch queue is
empty, every accepted task ended), the log's append rate (events appended over that time,
from positions), how far the task view trailed (its last task shown as ended), and the
worker rounds that started tasks, per second and tasks a round (read from the log: a round's
starts are one transaction, so the distinct ``xmin`` of its ``TaskStarted`` rows). The raw
ceiling of the same run (single-row INSERT + COMMIT from one client) is printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

from psycopg import sql

from execution_ledger.adapters.runtime import Runtime
from tests.bench.bench_worker import count, unfinished, wait_until
from tests.bench.common import free_port, fresh_runtime, raw_insert_rate
from tests.bench.http_load import run_load
from tests.bench.http_servers import running
from tests.bench.node_process import NodeProcesses

CONFIG = """
[queues.default]
concurrency = 1000

[task_types.echo]
adapter = "python"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
"""
NODE_CONCURRENCY = 50


@dataclass(frozen=True)
class NodesResult:
    workers: int
    accepted: float  # tasks/s answered 2xx by the API node
    ended: float  # tasks/s from the load's start until every task ended
    appended: float  # events/s appended to the log over the same time
    p50_ms: float
    view_lag: float  # seconds after the last end until the task view showed it
    elapsed: float  # seconds from the load's start to the last task's end
    rounds: int  # claim rounds that started a task (their transactions, from the log)
    started: int  # attempts started


def starting_rounds(runtime: Runtime) -> tuple[int, int]:
    """How many transactions stored a ``TaskStarted`` (a worker round that started
    something: all its starts commit together), and how many ``TaskStarted`` there are. Read
    from the log's rows' ``xmin`` after the run: no counter in the nodes, the same for any
    design of the round."""
    with runtime.store.transaction() as cur:
        row = cur.execute(
            sql.SQL(
                "SELECT count(DISTINCT xmin::text) AS rounds, count(*) AS started FROM {} "
                "WHERE topic = 'domain.task:Task.TaskStarted'"
            ).format(runtime.store.table)
        ).fetchone()
    assert row is not None
    return int(row["rounds"]), int(row["started"])


def run(workers: int, clients: int, seconds: float) -> NodesResult:
    """One API node and ``workers`` worker nodes under ``clients`` for ``seconds``."""
    with fresh_runtime(CONFIG) as runtime:
        port = free_port()
        start_position = runtime.store.head_position()
        with running("api", port), NodeProcesses(workers, NODE_CONCURRENCY) as nodes:
            nodes.go()
            started = time.perf_counter()
            load = asyncio.run(run_load(port, clients, seconds))
            wait_until(lambda: not unfinished(runtime), nodes)
            ended_at = time.perf_counter()
            appended = runtime.store.head_position() - start_position
            total = count(
                runtime,
                "SELECT count(*) AS n FROM {schema}.ledger_events "
                "WHERE topic = 'domain.task:Task.TaskEnqueued'",
            )
            wait_until(
                lambda: count(
                    runtime,
                    "SELECT count(*) AS n FROM {schema}.task_view WHERE state = 'succeeded'",
                )
                >= total,
                nodes,
                0.05,
            )
            view_lag = time.perf_counter() - ended_at
        rounds, started_count = starting_rounds(runtime)
    elapsed = ended_at - started
    return NodesResult(
        workers=workers,
        accepted=load.rate,
        ended=total / elapsed,
        appended=appended / elapsed,
        p50_ms=load.ms(50),
        view_lag=view_lag,
        elapsed=elapsed,
        rounds=rounds,
        started=started_count,
    )


def print_table(results: list[NodesResult], raw: float) -> None:
    base = results[0]
    print(f"raw ceiling, single-row INSERT+COMMIT from 1 client: {raw:,.0f}/s")
    header = (
        "worker nodes | accepted/s | p50 ms | ended/s | events/s | x first row (ended) "
        "| x raw (ended) | task view lag s | starting rounds/s | tasks a round"
    )
    print(header)
    print("|".join("---" for _ in header.split("|")))
    for r in results:
        print(
            f"{r.workers} | {r.accepted:,.0f} | {r.p50_ms:.1f} | {r.ended:,.0f} | "
            f"{r.appended:,.0f} | {r.ended / base.ended:.2f}x | {r.ended / raw:.2f}x | "
            f"{r.view_lag:.2f} | {r.rounds / r.elapsed:,.0f} | {r.started / max(r.rounds, 1):.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of load counted")
    parser.add_argument("--clients", type=int, default=20, help="concurrent HTTP clients")
    parser.add_argument(
        "--workers", default="1,3", help="worker node counts to compare, the first the base"
    )
    options = parser.parse_args()
    counts = [int(n) for n in options.workers.split(",")]
    raw = raw_insert_rate()
    results = [run(n, options.clients, options.seconds) for n in counts]
    print_table(results, raw)


if __name__ == "__main__":
    main()
