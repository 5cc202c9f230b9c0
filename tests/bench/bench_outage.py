"""Benchmark: a 20 s database outage under a steady enqueue load.

The API and a worker node (``ledger serve``'s pieces, in one process) run on a private
PostgreSQL cluster (``tests/private_postgres.py``); client threads enqueue without pause,
each call with its own idempotency key and a 10 s client timeout (above the 5 s request
deadline). The cluster is stopped (``pg_ctl stop -m immediate``) for 20 s, then started.
Printed: calls answered within the deadline, commits after an error answer (keys of calls
refused 503 or unanswered found in the ledger), the writes that were under way when the
server died (answered 500 ``outcome_unknown``: their COMMIT may have reached the server, or
``saved_but_unreadable``) and how many of those did commit, and the time from the cluster
accepting connections again to the first successful enqueue and to the first task run.

    python -m tests.bench.bench_outage
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import psycopg
from psycopg import sql

from execution_ledger.adapters.http.limits import HttpLimits
from execution_ledger.adapters.runtime import Runtime, open_runtime
from tests.adapters.http.live_server import LiveServer
from tests.private_postgres import PrivatePostgres, private_postgres

CLIENTS = 4
DEADLINE = 5.0  # seconds, the default request deadline
CLIENT_TIMEOUT = 10.0  # seconds, a common client timeout
SLACK = 0.25  # seconds of HTTP and thread hand-off allowed past the deadline
WARM_UP, OUTAGE, AFTER = 3.0, 20.0, 8.0  # seconds


@dataclass
class Call:
    key: str
    sent: float
    answered: float
    status: int | None  # None: no answer before the client's timeout
    answer: str = "no answer"  # the status and, for an error, its code


def load(url: str, stop: threading.Event, calls: list[Call]) -> None:
    """Enqueue back to back until ``stop``."""
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as client:
        while not stop.is_set():
            key = f"bench-{uuid4().hex}"
            sent = time.monotonic()
            body = {"type": "echo", "args": {}, "idempotency_key": key}
            try:
                response = client.post("/v1/tasks", json=body)
            except httpx.HTTPError:
                calls.append(Call(key, sent, time.monotonic(), None))
                continue
            answer = str(response.status_code)
            if response.status_code >= 300:
                answer += " " + response.json()["error"]["code"]
            calls.append(Call(key, sent, time.monotonic(), response.status_code, answer))


def restart(cluster: PrivatePostgres) -> tuple[float, datetime]:
    """Start the cluster; the moment (monotonic and wall clock) it first accepts a
    connection, seen by a poller every 5 ms."""
    seen: list[tuple[float, datetime]] = []

    def poll() -> None:
        while not seen:
            try:
                psycopg.connect(cluster.url, connect_timeout=2).close()
                seen.append((time.monotonic(), datetime.now(UTC)))
            except psycopg.OperationalError:
                time.sleep(0.005)

    poller = threading.Thread(target=poll)
    poller.start()
    cluster.start()
    poller.join()
    return seen[0]


def committed_keys(runtime: Runtime, keys: list[str]) -> int:
    table = sql.Identifier(runtime.settings.schema, "idempotency_keys")
    query = sql.SQL("SELECT count(*) FROM {} WHERE key = ANY(%s)").format(table)
    with psycopg.connect(runtime.database_url) as conn:
        row = conn.execute(query, (keys,)).fetchone()
    return int(row[0]) if row else 0


def first_start_after(runtime: Runtime, moment: datetime) -> datetime | None:
    """The first task start at or after ``moment`` (once the task view has caught up)."""
    table = sql.Identifier(runtime.settings.schema, "task_view")
    query = sql.SQL("SELECT min(started_at) FROM {} WHERE started_at >= %s").format(table)
    for _ in range(100):
        runtime.catch_up()
        with psycopg.connect(runtime.database_url) as conn:
            row = conn.execute(query, (moment,)).fetchone()
        if row and row[0] is not None:
            return row[0]
        time.sleep(0.1)
    return None


def run(cluster: PrivatePostgres, runtime: Runtime) -> None:
    calls: list[Call] = []
    stop = threading.Event()
    limits = HttpLimits(request_deadline_seconds=DEADLINE)
    with LiveServer(runtime, limits=limits, worker=True) as live:
        clients = [
            threading.Thread(target=load, args=(live.url, stop, calls)) for _ in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        time.sleep(WARM_UP)
        cluster.stop()
        time.sleep(OUTAGE)
        accepting, accepting_wall = restart(cluster)
        time.sleep(AFTER)
        stop.set()
        for client in clients:
            client.join()
        first_run = first_start_after(runtime, accepting_wall)
        report(runtime, calls, accepting, first_run and first_run - accepting_wall)


def report(
    runtime: Runtime,
    calls: list[Call],
    accepting: float,
    first_run: timedelta | None,
) -> None:
    within = [c for c in calls if c.status is not None and c.answered - c.sent <= DEADLINE + SLACK]
    errors = [c for c in calls if c.status is None or c.status >= 300]
    ok_after = [c.answered for c in calls if c.status in (200, 201) and c.answered > accepting]
    longest = max(c.answered - c.sent for c in calls)
    print(f"clients: {CLIENTS}, deadline {DEADLINE:g} s, client timeout {CLIENT_TIMEOUT:g} s, "
          f"outage {OUTAGE:g} s (pg_ctl stop -m immediate)")  # fmt: skip
    print(f"calls: {len(calls)}; answered within the deadline (+{SLACK:g} s): {len(within)} of "
          f"{len(calls)}; longest answer {longest:.2f} s")  # fmt: skip
    answers: dict[str, int] = {}
    for call in calls:
        answers[call.answer] = answers.get(call.answer, 0) + 1
    print(f"answers: {dict(sorted(answers.items()))}")
    refused = [c.key for c in errors if c.status in (None, 503)]
    in_doubt = [c.key for c in errors if c.status not in (None, 503)]
    print(f"commits after an error answer (503 or none): {committed_keys(runtime, refused)} "
          f"of {len(refused)}")  # fmt: skip
    print(f"writes under way when the server died (500 outcome_unknown, saved_but_unreadable): "
          f"{len(in_doubt)}, of which committed: {committed_keys(runtime, in_doubt)}")  # fmt: skip
    if ok_after:
        print(f"reconnection: first successful enqueue {min(ok_after) - accepting:.2f} s after "
              "the cluster accepted connections again")  # fmt: skip
    if first_run is not None:
        print(f"reconnection: first task run {first_run.total_seconds():.2f} s after the "
              "cluster accepted connections again")  # fmt: skip


def main() -> None:
    logging.getLogger().setLevel(logging.CRITICAL)  # the outage's warnings, expected here
    with private_postgres() as cluster:
        os.environ["LEDGER_DATABASE_URL"] = cluster.url
        os.environ["LEDGER_SCHEMA"] = f"bench_{uuid4().hex[:12]}"
        os.environ.pop("LEDGER_CONFIG", None)
        runtime = open_runtime(pool_size=4)
        try:
            run(cluster, runtime)
        finally:
            runtime.close()


if __name__ == "__main__":
    main()
