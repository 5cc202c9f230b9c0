"""Benchmark: list queries, claims and ``/healthz`` on a large log, before and after
``ledger archive``, beside a small log with the same live work.

Two ledgers, each on a fresh schema, each ending with the same live work (``--live`` ready
tasks, claimed from during the measures):

- **small**: about ``--small`` events of ended tasks before the live work;
- **large**: about ``--events`` events of ended tasks before it; measured once as it is, then
  archived (every ended task past a retention of 1 ms) and measured again.

Old tasks are built without a worker (graphs of 5,000 independent tasks, started and ended in
one save per graph; one in ten fails, is retried and succeeds). Measures, each the median
of ``--reps`` calls: ``GET /v1/tasks?limit=50``, ``GET /v1/tasks?state=ready&limit=50``,
``GET /v1/queues`` (counts per state), ``GET /healthz`` (over HTTP, one server per phase), and
a worker round's claim of 10 tasks (``PostgresDispatch.claim``; the previous claim's
attempts are recorded as successes between two claims, not timed). Also the
sizes of the live tables and the archival's own time.

With ``--bulk N`` the large log's old history is not written task by task: a template of
about ``N`` events of the same tasks is written through the normal path into a scratch
schema, projected, and copied into the large ledger with new ids, positions and times, its
audit chain computed as it goes (``bulk_history.py``); the live work is then written and
projected normally. ``--check-bulk`` rebuilds every read model of the large ledger from its
log and verifies its audit chain before measuring (for small runs: it replays everything).

    python -m tests.bench.bench_retention                                  # 200,000 events
    python -m tests.bench.bench_retention --events 10000000 --bulk 33000   # 10 million
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg import sql

from execution_ledger.adapters.config_file import DEFAULT_REGISTRY
from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.postgres.audit import verify_chain
from execution_ledger.adapters.postgres.dispatch import PostgresDispatch
from execution_ledger.adapters.retention.archiver import Archiver
from execution_ledger.adapters.retention.segments import configured_archive
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.execution import AttemptOutcome, ClaimedAttempt, Success
from execution_ledger.domain.submission import TaskRequest
from tests.adapters.http.live_server import LiveServer
from tests.bench import bulk_history
from tests.bench.common import fresh_runtime

GRAPH = 5000
FAIL_EVERY = 10
CLAIM = 10
RETENTION = """
[retention]
succeeded = "1ms"
failed = "1ms"
archive_dir = "{archive}"
"""
CALLS = {
    "list": "/v1/tasks?limit=50",
    "list ready": "/v1/tasks?state=ready&limit=50",
    "queues": "/v1/queues",
    "healthz": "/healthz",
}
TABLES = (
    "ledger_events",
    "task_view",
    "readiness_nodes",
    "dispatch_queue",
    "attempt_dataset",
    "audit_chain",
)


def build_old(runtime: Runtime, events: int) -> None:
    """About ``events`` events of tasks that all ended."""
    written, index = 0, 0
    while written < events:
        size = min(GRAPH, max(1, (events - written) // 3))
        requests = [TaskRequest("echo", {"i": index + n}) for n in range(size)]
        index += size
        tasks = runtime.ledger.enqueue_graph(requests)
        written += len(tasks)
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=60)
        for n, task in enumerate(tasks):
            attempt = task.start(f"bench-node-{n % 4}", lease, now)
            if n % FAIL_EVERY == 0:
                task.fail(attempt, "RuntimeError", "boom")
                task.schedule_retry(now)
                attempt = task.start(f"bench-node-{n % 4}", lease, now)
            task.succeed(attempt, {"ok": True, "n": n})
        written += sum(len(t.pending_events) for t in tasks)
        runtime.store.save(*tasks)


def build_live(runtime: Runtime, ready: int) -> None:
    for start in range(0, ready, GRAPH):
        count = min(GRAPH, ready - start)
        runtime.ledger.enqueue_graph(
            [TaskRequest("echo", {"live": start + n}) for n in range(count)]
        )


def timed(call: Callable[[], Any], reps: int) -> list[float]:
    """Milliseconds of ``reps`` calls (after one warm-up call)."""
    call()
    seconds = []
    for _ in range(reps):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return [s * 1000 for s in seconds]


def summary(milliseconds: list[float]) -> dict[str, float]:
    """Median and fastest: the machine is shared, the fastest call shows the floor."""
    return {"median": statistics.median(milliseconds), "min": min(milliseconds)}


def measure(runtime: Runtime, reps: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with LiveServer(runtime) as live, httpx.Client(base_url=live.url, timeout=60) as client:
        for name, path in CALLS.items():

            def get(path: str = path) -> None:
                client.get(path).raise_for_status()

            results[name] = summary(timed(get, reps))
    dispatch = PostgresDispatch(runtime.store, runtime.settings.config.registry, utc_now)
    dispatch.register_worker("bench-claimer", "bench", 0, ["default"], CLAIM)

    held: list[ClaimedAttempt] = []

    def finish() -> None:  # the previous claim's attempts end (not timed)
        dispatch.complete([AttemptOutcome(a.task_id, a.attempt, Success({})) for a in held])

    def claim() -> None:
        finish()
        started = time.perf_counter()
        claimed = dispatch.claim(["default"], CLAIM, "bench-claimer")
        claims.append(time.perf_counter() - started)
        if len(claimed) != CLAIM:
            raise RuntimeError("ran out of ready tasks: raise --live")
        held[:] = claimed

    claims: list[float] = []
    for _ in range(reps + 1):
        claim()
    finish()
    results["claim 10"] = summary([c * 1000 for c in claims[1:]])
    return results


# The SQL of the measured calls (as ``adapters/postgres/task_queries.py`` and
# ``EventStore.head_position`` send it), for ``--explain``.
EXPLAINED = {
    "list": "SELECT * FROM {s}.task_view ORDER BY enqueued_at DESC, task_id DESC LIMIT 51",
    "list ready": "SELECT * FROM {s}.task_view WHERE state = 'ready' "
    "ORDER BY enqueued_at DESC, task_id DESC LIMIT 51",
    "queues": "SELECT queue, count(*) FILTER (WHERE state = 'ready' OR run_at <= now()) AS ready, "
    "count(*) FILTER (WHERE state = 'scheduled' AND run_at > now()) AS scheduled "
    "FROM {s}.readiness_nodes WHERE state IN ('ready', 'scheduled') GROUP BY queue",
    "queues running": "SELECT queue, count(*) AS running FROM {s}.running_attempts GROUP BY queue",
    # ``EventStore.head_position``: the horizon first, then the last position below it
    "healthz head": "SELECT max(notification_id) AS last FROM {s}.ledger_events "
    "WHERE notification_id <= {h}",
}


def explain(runtime: Runtime) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the measured calls' SQL: where the time goes."""
    plans = {}
    schema = sql.Identifier(runtime.settings.schema).as_string(None)
    with psycopg.connect(runtime.database_url) as conn:
        horizon = conn.execute(f"SELECT {schema}.ledger_log_horizon()").fetchone()  # type: ignore[arg-type]
        for name, text in EXPLAINED.items():
            query = text.format(s=schema, h=int(horizon[0]) if horizon else 0)
            rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query).fetchall()  # type: ignore[arg-type]
            plans[name] = "\n".join(str(r[0]) for r in rows)
            print(f"-- {name}\n{plans[name]}", file=sys.stderr)
    return plans


def table_sizes(runtime: Runtime) -> dict[str, int]:
    """Rows of each live table, and the schema's bytes on disk (tables and indexes)."""
    with psycopg.connect(runtime.database_url) as conn:
        on_disk = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
            "WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'r'",
            (sql.Identifier(runtime.settings.schema).as_string(conn),),
        ).fetchone()
        return {"bytes": int(on_disk[0]) if on_disk and on_disk[0] else 0} | {
            table: int(
                conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(
                        sql.Identifier(runtime.settings.schema, table)
                    )
                ).fetchone()[0]  # type: ignore[index]
            )
            for table in TABLES
        }


def prepare(runtime: Runtime, events: int, live: int) -> float:
    started = time.perf_counter()
    build_old(runtime, events)
    build_live(runtime, live)
    runtime.catch_up()
    return time.perf_counter() - started


def prepare_bulk(
    runtime: Runtime, config: str, events: int, live: int, template_events: int, span_days: float
) -> tuple[float, dict[str, Any]]:
    """The large log's old history copied from a template (``bulk_history.py``), then the
    live work through the normal path."""
    started = time.perf_counter()
    outer = {k: os.environ.get(k) for k in ("LEDGER_SCHEMA", "LEDGER_CONFIG")}
    try:
        with fresh_runtime(config) as template:
            build_old(template, template_events)
            template.catch_up()
            size = template.store.head_position()
            plan = bulk_history.BulkPlan(
                template.settings.schema,
                runtime.settings.schema,
                copies=max(1, round(events / size)),
                span=timedelta(days=span_days),
            )
            report = bulk_history.copy_history(runtime.database_url, plan)
    finally:
        for key, value in outer.items():
            if value is not None:
                os.environ[key] = value
    live_started = time.perf_counter()
    build_live(runtime, live)
    runtime.catch_up()
    report.seconds["live work"] = time.perf_counter() - live_started
    details = {
        "template_events": report.template_events,
        "copies": report.copies,
        "bulk_events": report.events,
        "seconds": report.seconds,
    }
    return time.perf_counter() - started, details


def check_bulk(runtime: Runtime) -> dict[str, Any]:
    """Every read model rebuilt from the log equals the copied one; the chain verifies."""
    tables = [
        "task_view",
        "readiness_nodes",
        "readiness_edges",
        "attempt_dataset",
        "attempt_dataset_tasks",
        "attempt_dataset_depths",
        "dispatch_queue",
    ]
    started = time.perf_counter()
    report = verify_chain(runtime.store)
    differ = bulk_history.check_rebuild(runtime, tables)
    result = {
        "chain_ok": report.ok,
        "chain_detail": report.detail,
        "rows_differing": differ,
        "seconds": time.perf_counter() - started,
    }
    print(f"bulk check: {result}", file=sys.stderr)
    if not report.ok or any(differ.values()):
        raise RuntimeError(f"the bulk history is not what the normal path makes: {result}")
    return result


class TimedArchiver(Archiver):
    """The archiver, with the time of its two long steps kept (writing the segments,
    deleting from the live tables)."""

    steps: dict[str, float]

    def _write(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super()._write(*args, **kwargs)
        finally:
            self.steps["write segments"] = time.perf_counter() - started

    def _delete(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super()._delete(*args, **kwargs)
        finally:
            self.steps["delete"] = time.perf_counter() - started


def archive(runtime: Runtime) -> tuple[float, Any]:
    policy = runtime.settings.config.retention
    folder = configured_archive(policy, runtime.settings.schema)
    assert policy is not None and folder is not None
    archiver = TimedArchiver(runtime.database_url, runtime.settings.schema, policy, folder, utc_now)
    archiver.steps = {}
    started = time.perf_counter()
    report = archiver.run()
    seconds = time.perf_counter() - started
    print(f"archive steps (s): {archiver.steps}", file=sys.stderr)
    return seconds, report


def run(
    events: int,
    small: int,
    live: int,
    reps: int,
    bulk: int = 0,
    span_days: float = 30.0,
    check: bool = False,
    plans: bool = False,
) -> None:
    def observed(runtime: Runtime) -> dict[str, Any]:
        load = os.getloadavg()[0]  # the machine is shared: the load beside each phase
        found = {"times": measure(runtime, reps), "rows": table_sizes(runtime)}
        found["load"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        found["at"] = time.strftime("%H:%M:%S", time.gmtime())
        if plans:
            found["plans"] = explain(runtime)
        return found

    phases: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as directory:
        config = DEFAULT_REGISTRY.read_text() + RETENTION.format(archive=directory)
        with fresh_runtime(config) as runtime:
            built = prepare(runtime, small, live)
            print(f"small: built in {built:.0f} s", file=sys.stderr)
            phases["small"] = observed(runtime)
        with fresh_runtime(config) as runtime:
            details: dict[str, Any] = {}
            if bulk:
                built, details = prepare_bulk(runtime, config, events, live, bulk, span_days)
            else:
                built = prepare(runtime, events, live)
            print(f"large: built and projected in {built:.0f} s {details}", file=sys.stderr)
            if check:
                details["check"] = check_bulk(runtime)
            phases["large"] = {
                **observed(runtime),
                "build_seconds": built,
                "bulk": details,
            }
            seconds, report = archive(runtime)
            print(
                f"archived {report.events_archived:,} events in {len(report.written)} segments "
                f"and removed {report.tasks_removed:,} tasks in {seconds:.1f} s",
                file=sys.stderr,
            )
            phases["large, archived"] = {
                **observed(runtime),
                "archive_seconds": seconds,
                "events_archived": report.events_archived,
                "tasks_removed": report.tasks_removed,
                "segments": len(report.written),
            }
    report_table(phases)
    print(json.dumps(phases), file=sys.stderr)


def report_table(phases: dict[str, dict[str, Any]]) -> None:
    small = phases["small"]["times"]
    names = list(small)
    print("median ms (fastest ms) and the median's ratio to the small log's")
    print("| log | events live | load | " + " | ".join(names) + " |")
    print("|---|---:|---:|" + "---:|" * len(names))
    for phase, data in phases.items():
        times = data["times"]
        cells = [
            f"{times[n]['median']:.1f} ({times[n]['min']:.1f}) ×{times[n]['median'] / small[n]['median']:.2f}"
            for n in names
        ]
        load = "–".join(f"{x:.1f}" for x in data["load"])
        print(
            f"| {phase} | {data['rows']['ledger_events']:,} | {load} | " + " | ".join(cells) + " |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events of the large log")
    parser.add_argument("--small", type=int, default=10_000, help="events of the small log")
    parser.add_argument("--live", type=int, default=2_000, help="ready tasks in each log")
    parser.add_argument("--reps", type=int, default=30, help="calls per measure")
    parser.add_argument(
        "--bulk",
        type=int,
        default=0,
        metavar="N",
        help="copy the large log's history from a template of about N events (0: no)",
    )
    parser.add_argument(
        "--span-days", type=float, default=30.0, help="time the copied history spans"
    )
    parser.add_argument(
        "--check-bulk",
        action="store_true",
        help="rebuild the large ledger's read models and verify its chain before measuring",
    )
    parser.add_argument(
        "--explain", action="store_true", help="print the plans of the measured calls' SQL"
    )
    options = parser.parse_args()
    if options.live < 2 * (options.reps + 1) * CLAIM:
        parser.error("--live must be at least 2 * (--reps + 1) * 10")
    run(
        options.events,
        options.small,
        options.live,
        options.reps,
        options.bulk,
        options.span_days,
        options.check_bulk,
        options.explain,
    )


if __name__ == "__main__":
    main()
