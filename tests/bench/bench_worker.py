"""Benchmark: the execution engine, beside the raw ceiling measured in the same run.

Every worker node runs in a process of its own, built as ``ledger worker`` builds it (the
projections in its child process, ``node_process.py``); this process only enqueues and
watches the database.

- drain: 20,000 no-op tasks, already enqueued, run by one node at concurrency 10 and 50,
  each measured twice: with the projections caught up before the node starts, and with
  the projections starting with the worker (the log's 20,000 enqueues still to fold, as
  after a bulk enqueue). Tasks/s from the node's start to the last task's end (the dispatch
  queue empty), ratio to the raw ceiling; also to the task view showing them all; and,
  in a table of its own, the CPU per task over the same stretch of the node, its
  projection child and every PostgreSQL process (``cpu_use.py``): steadier than a rate on
  a shared machine; with ``--statements``, where ``pg_stat_statements`` is loaded, also
  PostgreSQL's time over that stretch by statement (``statement_stats.py``);
- bare: the same drains with no projections running (nodes as ``ledger worker
  --no-projections`` runs them, as when the projections run on another machine): what the
  dispatch path reaches when it does not share the two cores with the projections;
- two nodes: the same drain (concurrency 50, projections starting with the workers) by two
  node processes, against the one-node figure;
- latency: enqueue -> start at 50 tasks/s to an idle node, from the caller's clock (the
  time before the enqueue call, in this process, to the ``time.time()`` the task reads at
  its start, in the node's process), beside the stored timestamps' difference;
- chain: a task that enqueues the next from inside itself (Python API), per hop; and a
  200-task dependency chain enqueued at once (a DAG), per hop from stored timestamps.

The latency and the chains are measured on a warm node: ``WARM_UP_TASKS`` tasks run one by
one first (a new node's first rounds run unprepared statements with cold caches).

The ceiling for rates is single-row INSERT + COMMIT from one client; for times, one such
commit (so "x" of a time reads: as long as that many commits).

    python -m tests.bench.bench_worker [--tasks 20000] [--only drain,bare,nodes,latency,chain]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from psycopg import sql

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from tests.bench.common import fresh_runtime, percentile, print_columns, raw_insert_rate
from tests.bench.cpu_use import CpuMeter, CpuUse
from tests.bench.node_process import NodeProcesses
from tests.bench.statement_stats import Statement, StatementStats, print_statements

CONFIG = """
[queues.default]
concurrency = 1000

[task_types.noop]
adapter = "python"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:noop" }

[task_types.stamp]
adapter = "python"
settings = { callable = "tests.bench.chain_tasks:stamp" }

[task_types.hop]
adapter = "python"
settings = { callable = "tests.bench.chain_tasks:hop" }
"""
PART_NAMES = ("drain", "bare", "nodes", "latency", "chain")
WAIT_TIMEOUT = 900.0
WARM_UP_TASKS = 10  # run one by one before the latency or a chain is measured


@dataclass(frozen=True)
class Row:
    """One line of the printed table: a rate (higher is better) or a time in ms."""

    measure: str
    value: float
    ceiling: float
    unit: str  # "tasks/s" or "ms"
    target: str = ""


def count(runtime: Runtime, query: str) -> int:
    with runtime.store.transaction() as cur:
        composed = sql.SQL(query).format(schema=sql.Identifier(runtime.settings.schema))
        return int(cur.execute(composed).fetchone()["n"])  # type: ignore[index]


def unfinished(runtime: Runtime) -> bool:
    """Whether a task has not yet ended (the dispatch queue holds every task until its end
    event). One row looked at, not a count: polled every 20 ms during a drain, a count of
    the queue's 10,000 rows took 3 % of the server's time from the work measured."""
    return bool(
        count(
            runtime,
            "SELECT count(*) AS n FROM (SELECT FROM {schema}.dispatch_queue LIMIT 1) AS one",
        )
    )


def logged_successes(runtime: Runtime) -> int:
    return count(
        runtime,
        "SELECT count(*) AS n FROM {schema}.ledger_events WHERE topic LIKE '%:Task.TaskSucceeded'",
    )


def projected_successes(runtime: Runtime) -> int:
    return count(runtime, "SELECT count(*) AS n FROM {schema}.task_view WHERE state = 'succeeded'")


def wait_until(condition: Callable[[], bool], nodes: NodeProcesses, interval: float = 0.02) -> None:
    """Poll ``condition`` until it holds; raise if a node process exits meanwhile."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not condition():
        nodes.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting after {WAIT_TIMEOUT:.0f} s")
        time.sleep(interval)


def enqueue_noops(runtime: Runtime, tasks: int) -> None:
    for start in range(0, tasks, 1000):
        batch = [TaskRequest("noop", {"i": i}) for i in range(start, min(tasks, start + 1000))]
        runtime.ledger.enqueue_graph(batch)


@dataclass(frozen=True)
class Drained:
    rate: float  # tasks/s from the nodes' start to the last task's end
    projected: float  # tasks/s to the task view showing them all
    cpu: CpuUse  # per task, over the same stretch as ``rate``
    statements: list[Statement]  # PostgreSQL's time by statement, the same stretch


def drain(
    tasks: int,
    concurrency: int,
    caught_up: bool,
    nodes: int = 1,
    projections: bool = True,
    statements: bool = False,
) -> Drained:
    """``tasks`` no-op tasks drained by ``nodes`` worker nodes. ``caught_up``: the
    projections fold the enqueues before the clock starts; otherwise they start with the
    worker. ``projections=False``: none run (``projected`` is then 0). ``statements``:
    PostgreSQL's time by statement too, where ``pg_stat_statements`` is loaded."""
    with fresh_runtime(CONFIG) as runtime:
        enqueue_noops(runtime, tasks)
        if caught_up:
            runtime.catch_up()
        stats = StatementStats(runtime.database_url)
        with NodeProcesses(nodes, concurrency, projections) as processes:
            meter = CpuMeter(process.pid for process in processes.processes)
            if statements:
                stats.start()
            processes.go()
            started = time.perf_counter()
            wait_until(lambda: not unfinished(runtime), processes)
            ran = time.perf_counter() - started
            cpu = meter.stop()
            counted = stats.stop()
            projected = 0.0
            if projections:
                wait_until(lambda: projected_successes(runtime) >= tasks, processes, 0.1)
                projected = tasks / (time.perf_counter() - started)
        ended = projected_successes(runtime) if projections else logged_successes(runtime)
        assert ended == tasks, "every task must have succeeded"
        return Drained(tasks / ran, projected, cpu.per(tasks), counted)


def started_at(runtime: Runtime, task_ids: list[UUID]) -> dict[UUID, float]:
    """The ``started`` wall-clock time each task returned."""
    tasks = runtime.store.load_many(task_ids)
    return {task_id: float(tasks[task_id].result["started"]) for task_id in task_ids}


def stored_waits(runtime: Runtime, task_ids: list[UUID]) -> list[float]:
    """``TaskStarted.timestamp - TaskEnqueued.timestamp`` of each task, in ms."""
    waits = []
    for task_id in task_ids:
        history = [e.event for e in runtime.store.history(task_id)]
        started = next(e for e in history if type(e).__name__ == "TaskStarted")
        waits.append((started.timestamp - history[0].timestamp).total_seconds() * 1000)
    return waits


def run_one(runtime: Runtime, request: TaskRequest, nodes: NodeProcesses) -> UUID:
    """Enqueue one task and wait for its end (a warm-up)."""
    task_id = runtime.ledger.enqueue(request).id
    wait_until(lambda: not unfinished(runtime), nodes)
    return task_id


def warm_up(runtime: Runtime, processes: NodeProcesses, type_name: str) -> None:
    """Run ``WARM_UP_TASKS`` tasks one by one: psycopg prepares a statement at its fifth
    run, and a new node's first rounds (unprepared, caches cold) are not the steady state
    the latency and the hops measure."""
    for i in range(WARM_UP_TASKS):
        # A hop's warm-up enqueues one more hop from inside itself, as the chain's do.
        args = {"n": 0, "last": 1} if type_name == "hop" else {"i": -1 - i}
        run_one(runtime, TaskRequest(type_name, args), processes)


def latency(rate: float, tasks: int) -> tuple[list[float], list[float]]:
    """Enqueue -> start, ms, from the caller's clock and from the stored timestamps."""
    with fresh_runtime(CONFIG) as runtime, NodeProcesses(1, 10) as processes:
        processes.go()
        warm_up(runtime, processes, "stamp")
        calls: dict[UUID, float] = {}
        first = time.perf_counter()
        for i in range(tasks):
            time.sleep(max(0.0, first + i / rate - time.perf_counter()))
            before = time.time()
            calls[runtime.ledger.enqueue(TaskRequest("stamp", {"i": i})).id] = before
        wait_until(lambda: not unfinished(runtime), processes)
        starts = started_at(runtime, list(calls))
        caller = [(starts[task_id] - before) * 1000 for task_id, before in calls.items()]
        return caller, stored_waits(runtime, list(calls))


def self_chain(hops: int) -> float:
    """Ms per hop of a chain whose tasks each enqueue the next from inside themselves:
    the last task's start minus the first's, over the hops between them."""
    with fresh_runtime(CONFIG) as runtime, NodeProcesses(1, 10) as processes:
        processes.go()
        warm_up(runtime, processes, "hop")  # also opens the task's runtime
        task_id: UUID | None = runtime.ledger.enqueue(
            TaskRequest("hop", {"n": 0, "last": hops - 1})
        ).id
        wait_until(lambda: not unfinished(runtime), processes)
        starts = []
        while task_id is not None:
            result = runtime.ledger.task(task_id).result
            starts.append(float(result["started"]))
            task_id = UUID(result["next"]) if result["next"] else None
        assert len(starts) == hops, f"the chain ran {len(starts)} hops of {hops}"
        return (starts[-1] - starts[0]) * 1000 / (hops - 1)


def dag_chain(length: int) -> float:
    """Ms per hop of a dependency chain enqueued at once: from the first task's start to
    the last task's end, over the hops, by the stored timestamps."""
    with fresh_runtime(CONFIG) as runtime:
        requests = [TaskRequest("noop", ref="t0")] + [
            TaskRequest("noop", ref=f"t{i}", depends_on=(f"t{i - 1}",)) for i in range(1, length)
        ]
        with NodeProcesses(1, 10) as processes:
            processes.go()
            warm_up(runtime, processes, "noop")
            tasks = runtime.ledger.enqueue_graph(requests)
            wait_until(lambda: not unfinished(runtime), processes)
        first = runtime.store.history(tasks[0].id)
        last = runtime.store.history(tasks[-1].id)
        start = next(e.event.timestamp for e in first if type(e.event).__name__ == "TaskStarted")
        return (last[-1].event.timestamp - start).total_seconds() * 1000 / (length - 1)


def drain_rows(
    tasks: int, raw: float, statements: bool
) -> tuple[list[Row], float, list[tuple[str, Drained]]]:
    """Both ways of starting the projections at concurrency 10 and 50, and each drain's CPU
    per task; also the figure of one node at 50 with projections starting with it (the
    two-node comparison's base)."""
    rows, base, drains = [], 0.0, []
    targets = {(10, False): ">= 0.8x", (50, False): ">= 2.0x"}
    for concurrency in (10, 50):
        for caught_up in (True, False):
            drained = drain(tasks, concurrency, caught_up, statements=statements)
            how = "caught up before" if caught_up else "starting with the worker"
            label = f"drain {tasks:,}, concurrency {concurrency}, projections {how}"
            target = targets.get((concurrency, caught_up), "")
            rows.append(Row(label, drained.rate, raw, "tasks/s", target))
            rows.append(Row("  ... until all in the task view", drained.projected, raw, "tasks/s"))
            drains.append((label, drained))
            base = drained.rate if (concurrency, caught_up) == (50, False) else base
    return rows, base, drains


def bare_rows(
    tasks: int, raw: float, statements: bool
) -> tuple[list[Row], list[tuple[str, Drained]]]:
    """The drains at concurrency 10 and 50 with no projections running."""
    rows, drains = [], []
    for concurrency in (10, 50):
        drained = drain(
            tasks, concurrency, caught_up=False, projections=False, statements=statements
        )
        label = f"drain {tasks:,}, concurrency {concurrency}, no projections running"
        rows.append(Row(label, drained.rate, raw, "tasks/s"))
        drains.append((label, drained))
    return rows, drains


def nodes_rows(tasks: int, raw: float, one_node: float) -> list[Row]:
    if not one_node:
        one_node = drain(tasks, 50, caught_up=False).rate
    two_nodes = drain(tasks, 50, caught_up=False, nodes=2).rate
    label = f"drain {tasks:,}, concurrency 50 per node, projections starting with the workers"
    return [
        Row(f"{label}: one node", one_node, raw, "tasks/s"),
        Row(f"{label}: two nodes", two_nodes, raw, "tasks/s", ">= one node"),
    ]


def latency_rows(rate: float, tasks: int, commit_ms: float) -> list[Row]:
    caller, stored = latency(rate, tasks)
    prefix = f"enqueue call -> start at {rate:g}/s"
    return [
        Row(f"{prefix}, caller's clock, p50", percentile(caller, 50), commit_ms, "ms", "<= 4 ms"),
        Row(f"{prefix}, caller's clock, p99", percentile(caller, 99), commit_ms, "ms", "<= 8 ms"),
        Row(f"{prefix}, stored timestamps, p50", percentile(stored, 50), commit_ms, "ms"),
        Row(f"{prefix}, stored timestamps, p99", percentile(stored, 99), commit_ms, "ms"),
    ]


def chain_rows(hops: int, commit_ms: float) -> list[Row]:
    return [
        Row(f"task enqueues the next from inside itself, {hops} hops, per hop",
            self_chain(hops), commit_ms, "ms", "<= 4 ms"),
        Row(f"dependency chain (DAG) of {hops}, per hop", dag_chain(hops), commit_ms, "ms",
            "<= 3 ms"),
    ]  # fmt: skip


def print_cpu(drains: list[tuple[str, Drained]]) -> None:
    """CPU per task of each drain: the node, its projection child, PostgreSQL."""
    lines = [("CPU per task while draining", "node", "projections", "PostgreSQL", "all")]
    for label, drained in drains:
        cpu = drained.cpu
        parts = (cpu.nodes, cpu.children, cpu.postgres)
        lines.append((label, *(f"{1e6 * p:,.0f} us" for p in (*parts, sum(parts)))))
    print_columns(lines)


def print_table(rows: list[Row]) -> None:
    lines = [("measure", "ledger", "ceiling", "x ceiling", "target")]
    for row in rows:
        digits = ",.0f" if row.unit == "tasks/s" else ".2f"
        lines.append(
            (
                row.measure,
                f"{row.value:{digits}} {row.unit}",
                f"{row.ceiling:{digits}} {row.unit}",
                f"{row.value / row.ceiling:.2f}x",
                row.target,
            )
        )
    print_columns(lines)


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per drain")
    parser.add_argument("--latency-tasks", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0, help="enqueues/s for latency")
    parser.add_argument("--hops", type=int, default=200, help="length of each chain")
    parser.add_argument("--only", default=",".join(PART_NAMES), help="comma-separated parts")
    parser.add_argument(
        "--statements",
        action="store_true",
        help="also PostgreSQL's time by statement in each drain (needs pg_stat_statements)",
    )
    options = parser.parse_args()
    unknown = set(options.only.split(",")) - set(PART_NAMES)
    if unknown:
        parser.error(f"unknown part {sorted(unknown)[0]!r}; parts: {', '.join(PART_NAMES)}")
    if min(options.tasks, options.latency_tasks, options.rate) <= 0 or options.hops < 2:
        parser.error("--tasks, --latency-tasks and --rate must be positive, --hops at least 2")
    return options


def main() -> None:
    options = parse_options()
    parts = options.only.split(",")
    raw = raw_insert_rate()
    commit_ms = 1000 / raw
    print(f"raw ceiling: {raw:,.0f} single-row INSERT+COMMIT/s ({commit_ms:.2f} ms each)")
    rows: list[Row] = []
    one_node = 0.0
    drains: list[tuple[str, Drained]] = []
    if "drain" in parts:
        drain_lines, one_node, drains = drain_rows(options.tasks, raw, options.statements)
        rows += drain_lines
    if "bare" in parts:
        bare, bare_drains = bare_rows(options.tasks, raw, options.statements)
        rows += bare
        drains += bare_drains
    if "nodes" in parts:
        rows += nodes_rows(options.tasks, raw, one_node)
    if "latency" in parts:
        rows += latency_rows(options.rate, options.latency_tasks, commit_ms)
    if "chain" in parts:
        rows += chain_rows(options.hops, commit_ms)
    print_table(rows)
    if drains:
        print()
        print_cpu(drains)
    for label, measured in drains:
        print()
        print_statements(label, measured.statements, options.tasks)


if __name__ == "__main__":
    main()
