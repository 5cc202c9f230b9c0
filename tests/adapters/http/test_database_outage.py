"""A database outage, seen over HTTP: the API and a worker node on a private PostgreSQL
cluster that the test stops (``pg_ctl stop -m immediate``) and starts again.

While the database is down, every enqueue (and read) is answered 503 with ``Retry-After`` within the
request deadline, and none of them is written later; once it is back, enqueues succeed at
once and tasks run. The client's timeout (well above the deadline) is only a guard: a call
that hangs fails the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from uuid import uuid4

import httpx
import psycopg
import pytest
from psycopg import sql

from execution_ledger.adapters.http.limits import HttpLimits
from execution_ledger.adapters.runtime import Runtime, open_runtime
from tests.adapters.http.live_server import LiveServer
from tests.private_postgres import PrivatePostgres, private_postgres

DEADLINE = 3.0  # seconds
GUARD = 15.0  # the client's timeout: only a hang reaches it


@pytest.fixture
def cluster() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


@pytest.fixture
def outage_runtime(cluster: PrivatePostgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("LEDGER_DATABASE_URL", cluster.url)
    monkeypatch.setenv("LEDGER_SCHEMA", f"outage_{uuid4().hex[:8]}")
    monkeypatch.delenv("LEDGER_CONFIG", raising=False)
    runtime = open_runtime(pool_size=2)
    yield runtime
    runtime.close()


@pytest.fixture
def live(outage_runtime: Runtime) -> Iterator[LiveServer]:
    limits = HttpLimits(request_deadline_seconds=DEADLINE)
    with LiveServer(outage_runtime, limits=limits, worker=True) as server:
        yield server


def enqueue(client: httpx.Client, key: str | None = None) -> httpx.Response:
    body: dict[str, object] = {"type": "echo", "args": {"n": 1}}
    if key is not None:
        body["idempotency_key"] = key
    return client.post("/v1/tasks", json=body)


def stored_task_ids(runtime: Runtime) -> set[str]:
    """Every task in the log, read straight from the events table."""
    query = sql.SQL("SELECT DISTINCT originator_id::text AS id FROM {} WHERE topic LIKE %s")
    table = sql.Identifier(runtime.settings.schema, "ledger_events")
    with psycopg.connect(runtime.database_url) as conn:
        rows = conn.execute(query.format(table), ("%TaskEnqueued",)).fetchall()
    return {row[0] for row in rows}


def test_enqueues_during_an_outage_are_503_and_never_written_then_work_again(
    cluster: PrivatePostgres, live: LiveServer
) -> None:
    with httpx.Client(base_url=live.url, timeout=GUARD) as client:
        before = enqueue(client)
        assert before.status_code == 201

        cluster.stop()
        refused = [enqueue(client, "outage-a"), enqueue(client), enqueue(client, "outage-b")]
        refused.append(client.get("/v1/tasks"))  # reads too
        for response in refused:
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "database_unavailable"
            assert response.headers["Retry-After"] == "1"

        cluster.start()
        after = enqueue(client, "outage-a")
        assert after.status_code == 201  # created now: the refused call left no key behind
        ran = client.post("/v1/tasks", params={"wait": 10}, json={"type": "echo", "args": {}})
        assert ran.status_code == 200
        assert ran.json()["state"] == "succeeded"

    assert stored_task_ids(live.runtime) == {before.json()["id"], after.json()["id"], ran.json()["id"]}


def waiting_backends(cluster: PrivatePostgres) -> int:
    """Backends of the cluster waiting for a lock."""
    with psycopg.connect(cluster.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_write_whose_connection_is_lost_under_way_is_outcome_unknown_not_503(
    cluster: PrivatePostgres, live: LiveServer
) -> None:
    answers: list[httpx.Response] = []
    with httpx.Client(base_url=live.url, timeout=GUARD) as client:
        assert enqueue(client).status_code == 201
        table = sql.Identifier(live.runtime.settings.schema, "ledger_events")
        holder = psycopg.connect(cluster.url)
        holder.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
        caller = threading.Thread(target=lambda: answers.append(enqueue(client, "lost")))
        caller.start()
        for _ in range(200):  # until the write waits on the lock (a positive signal)
            if waiting_backends(cluster):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the enqueue never reached the events table")
        cluster.stop()
        caller.join(GUARD)
        holder.close()
        cluster.start()
    assert [answer.status_code for answer in answers] == [500]
    assert answers[0].json()["error"]["code"] == "outcome_unknown"
