"""``POST /v1/simulations`` over a live server, on a log made by a real worker node: the
report of the registry the window ran under and of a wider one, deterministic and with its
digest; the log only read; a non-admin refused (403, recorded), a broken registry 422 naming
its line, bad numbers and times 400, a second simulation while one runs 429."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import psycopg
import pytest
from psycopg import sql

from execution_ledger.adapters.http.auth import token_sha256
from execution_ledger.adapters.http.limits import HttpLimits
from execution_ledger.adapters.postgres.event_store import EVENTS_TABLE
from tests.adapters.http.live_server import LiveServer
from tests.adapters.test_simulation_window import (  # noqa: F401 (module-scoped fixture)
    CONFIG,
    WIDER,
    ledger_module_env,
    workload,
)
from tests.processors.worker_harness import run_workload, runtime_with_config

ADMIN, VIEWER = "sim-admin-token-01", "sim-viewer-token-02"
PRINCIPALS = f"""
[roles.viewer]
task_types = ["nap"]

[[principals]]
name = "alice"
role = "admin"
token_sha256 = "{token_sha256(ADMIN)}"

[[principals]]
name = "vera"
role = "viewer"
token_sha256 = "{token_sha256(VIEWER)}"
"""


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
    ledger_module_env: None,  # noqa: F811
) -> Iterator[LiveServer]:
    """The workload of ``test_simulation_window`` run once by a worker node, then the API
    (with principals) over its log."""
    runtime = runtime_with_config(tmp_path_factory.mktemp("simulations"), CONFIG + PRINCIPALS)
    run_workload(runtime, workload())
    with LiveServer(runtime) as server:
        yield server
    runtime.close()


def simulate(live: LiveServer, body: dict[str, Any], token: str = ADMIN) -> Any:
    with live.client(token) as client:
        return client.post("/v1/simulations", json=body)


def test_the_registry_it_ran_under_reproduces_the_window_and_writes_nothing(
    live: LiveServer,
) -> None:
    head = live.runtime.store.head_position()
    answer = simulate(live, {"toml": CONFIG, "workers": 1, "concurrency": 10, "seed": 7})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["tasks"] == 14
    assert report["outcomes"]["simulated"] == report["outcomes"]["recorded"]
    assert report["outcomes"]["simulated"] == {"failed": 2, "succeeded": 12}
    assert report["inputs"]["registry_sha256"] == hashlib.sha256(CONFIG.encode()).hexdigest()
    assert report["inputs"]["registry_source"] == "POST /v1/simulations"
    assert (report["inputs"]["seed"], report["inputs"]["last_position"]) == (7, head)
    assert report["fidelity"]["start_order_spearman"] >= 0.8
    assert set(report["waits_by_queue"]) == {"narrow", "default"}
    assert report["busiest_lanes"][0]["lane"] == "agent:1"
    # The digest is the CLI's: sha256 of the canonical JSON of the rest.
    rest = {k: v for k, v in report.items() if k != "digest"}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert report["digest"] == hashlib.sha256(canonical.encode()).hexdigest()
    again = simulate(live, {"toml": CONFIG, "workers": 1, "concurrency": 10, "seed": 7})
    assert again.json()["digest"] == report["digest"]
    assert live.runtime.store.head_position() == head


def test_a_wider_queue_would_have_cut_the_narrow_queues_waits(live: LiveServer) -> None:
    ran = simulate(live, {"toml": CONFIG}).json()["waits_by_queue"]["narrow"]["simulated"]
    wider = simulate(live, {"toml": WIDER}).json()["waits_by_queue"]["narrow"]["simulated"]
    assert wider["p99_ms"] < ran["p99_ms"] / 2, (wider, ran)


def test_the_window_ends_at_a_position_or_a_time(live: LiveServer) -> None:
    assert simulate(live, {"toml": CONFIG, "until_position": 0}).json()["tasks"] == 0
    future = simulate(live, {"toml": CONFIG, "since": "2999-01-01T00:00:00+00:00"}).json()
    assert future["tasks"] == 0
    day = simulate(live, {"toml": CONFIG, "since": "24h", "until": "2999-01-01T00:00:00Z"})
    assert day.json()["tasks"] == 14


def test_a_non_admin_is_refused_and_the_refusal_recorded(live: LiveServer) -> None:
    refused = simulate(live, {"toml": CONFIG}, token=VIEWER)
    assert refused.status_code == 403
    assert "admin only" in refused.json()["error"]["message"]
    with live.client(ADMIN) as admin:
        denied = admin.get("/v1/events", params={"type": "AccessDenied"}).json()["events"]
    assert ("vera", "simulations.run") in [
        (e["data"]["principal"], e["data"]["action"]) for e in denied
    ]


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ("[queues.narrow]\nconcurrency = 2\n\n[task_types.x\n", "request body:4: not valid TOML"),
        (CONFIG.replace("concurrency = 2", "concurrency = -2"), "request body:3: expected"),
    ],
)
def test_a_broken_registry_is_422_naming_its_line(live: LiveServer, toml: str, says: str) -> None:
    refused = simulate(live, {"toml": toml})
    assert refused.status_code == 422
    assert says in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"workers": 0}, "workers must be between 1 and"),
        ({"concurrency": 10**9}, "concurrency must be between 1 and"),
        ({"seed": -1}, "seed must be a whole number"),
        ({"until_position": -3}, "until_position must be a log position"),
        ({"since": "last tuesday"}, "since: give an ISO 8601 time"),
        ({"until": "2026-01-01T00:00:00"}, "until needs a time zone"),
        ({"since": "1h", "until": "2h"}, "until must be after since"),
    ],
)
def test_bad_numbers_and_times_are_400(
    live: LiveServer, options: dict[str, Any], says: str
) -> None:
    refused = simulate(live, {"toml": CONFIG, **options})
    assert refused.status_code == 400, refused.text
    assert says in refused.json()["error"]["message"]


def test_a_body_off_the_schema_is_422(live: LiveServer) -> None:
    assert simulate(live, {"toml": CONFIG, "workers": "many"}).status_code == 422
    assert simulate(live, {"registry": CONFIG}).status_code == 422


def test_a_second_simulation_while_one_runs_is_429(live: LiveServer, database_url: str) -> None:
    """The event table locked by another session: the first simulation waits on its read
    (holding the server's one slot), the other is refused at once; the first answers once
    the lock goes."""
    body = {"toml": CONFIG}
    with psycopg.connect(database_url) as conn, ThreadPoolExecutor(2) as pool:
        conn.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(live.runtime.store.table)
        )
        answers = [pool.submit(simulate, live, body) for _ in range(2)]
        done, _ = wait(answers, timeout=20, return_when="FIRST_COMPLETED")
        refused = done.pop().result()
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "simulation_busy"
        assert refused.headers["Retry-After"] == "5"
        conn.rollback()  # the lock goes
        both = [a.result(timeout=20) for a in answers]
    assert sorted(a.status_code for a in both) == [200, 429]
    assert max(both, key=lambda a: a.status_code == 200).json()["tasks"] == 14


def test_the_answer_without_its_digest_is_evidence_for_the_registry_change(
    live: LiveServer,
) -> None:
    """The report minus ``digest``, as canonical JSON, is what ``ledger simulate --json``
    writes: ``POST /v1/registry/versions`` checks it (re-running the simulation) and takes it."""
    report = simulate(live, {"toml": WIDER, "seed": 5}).json()
    digest = report.pop("digest")
    text = json.dumps(report, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(text.encode()).hexdigest() == digest
    body = {"toml": WIDER, "report": text, "dry_run": True}
    with live.client(ADMIN) as admin:
        checked = admin.post("/v1/registry/versions", json=body)
        assert checked.status_code == 200, checked.text
        assert checked.json()["recorded"] is False
        altered = text.replace('"workers":1', '"workers":2')  # not what it was made of
        refused = admin.post("/v1/registry/versions", json={**body, "report": altered})
    assert refused.status_code == 422, refused.text


def test_a_simulation_goes_on_past_the_request_deadline(
    live: LiveServer, database_url: str
) -> None:
    """Its first read held past the request's deadline (the event table locked), the
    simulation's later reads still get a connection: each read has the deadline again."""
    limits = HttpLimits(request_deadline_seconds=0.3)
    with (
        LiveServer(live.runtime, limits=limits) as server,
        psycopg.connect(database_url) as conn,
        ThreadPoolExecutor(1) as pool,
    ):
        conn.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(live.runtime.store.table)
        )
        answer = pool.submit(simulate, server, {"toml": CONFIG})
        waiting_on_the_lock(conn, live.runtime.settings.schema)
        time.sleep(0.5)  # the request's deadline passes while its read waits
        conn.rollback()
        result = answer.result(timeout=20)
    assert result.status_code == 200, result.text
    assert result.json()["tasks"] == 14


def waiting_on_the_lock(conn: psycopg.Connection[Any], schema: str) -> None:
    query = (
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = "
        "(SELECT oid FROM pg_class WHERE relname = %s AND relnamespace = %s::regnamespace)"
    )
    deadline = time.monotonic() + 20
    while conn.execute(query, (EVENTS_TABLE, schema)).fetchone() == (0,):
        assert time.monotonic() < deadline, "the simulation never read the log"
        time.sleep(0.02)
