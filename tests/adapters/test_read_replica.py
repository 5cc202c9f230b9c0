"""A read replica and a failover, on real clusters started here: a private primary and a
streaming replica of it (``pg_basebackup -R``). List reads go to the replica while its lag is
within ``read_max_lag`` and to the primary past it; ``/healthz`` shows which and the lag; a
replay and an audit verification read the replica once it holds the whole log; a multi-host
URL with ``target_session_attrs=read-write`` finds the primary, and follows it when the
replica is promoted, with no acknowledged task lost or run twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from psycopg import conninfo

from execution_ledger.adapters.cli.main import main
from execution_ledger.adapters.config_file import DEFAULT_REGISTRY
from execution_ledger.adapters.runtime import Runtime, open_runtime
from tests.adapters.http.live_server import LiveServer
from tests.helpers import eventually
from tests.private_postgres import PrivatePostgres, free_port


def start_pair(synchronous: bool = False) -> tuple[PrivatePostgres, PrivatePostgres]:
    """A started primary and its started streaming replica (with ``synchronous``: every
    commit waits for the replica to have it on disk, so a failover loses none)."""
    primary = PrivatePostgres()
    primary.start()
    replica = PrivatePostgres(primary=primary)
    replica.start()
    eventually(
        lambda: primary.execute("SELECT count(*) FROM pg_stat_replication")[0][0] == 1,
        "the replica streams",
    )
    if synchronous:
        primary.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        primary.execute("SELECT pg_reload_conf()")
        eventually(
            lambda: primary.execute("SELECT sync_state FROM pg_stat_replication")[0][0] == "sync",
            "the replica is synchronous",
        )
    return primary, replica


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[PrivatePostgres, PrivatePostgres]]:
    primary, replica = start_pair()
    try:
        yield primary, replica
    finally:
        replica.close()
        primary.close()


def use_databases(
    monkeypatch: pytest.MonkeyPatch, url: str, read_url: str | None, max_lag: str = "60s"
) -> str:
    schema = f"test_{uuid4().hex[:16]}"
    monkeypatch.setenv("LEDGER_DATABASE_URL", url)
    monkeypatch.setenv("LEDGER_SCHEMA", schema)
    monkeypatch.setenv("LEDGER_READ_MAX_LAG", max_lag)
    monkeypatch.delenv("LEDGER_CONFIG", raising=False)
    if read_url is None:
        monkeypatch.delenv("LEDGER_READ_DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("LEDGER_READ_DATABASE_URL", read_url)
    return schema


def enqueue(client: httpx.Client, n: int) -> str:
    answer = client.post("/v1/tasks", json={"type": "echo", "args": {"n": n}})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def listed(client: httpx.Client) -> set[str]:
    answer = client.get("/v1/tasks", params={"limit": 500})
    assert answer.status_code == 200, answer.text
    return {row["id"] for row in answer.json()["tasks"]}


def reads(client: httpx.Client) -> dict[str, Any]:
    answer = client.get("/healthz")
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["reads"])


def test_list_reads_go_to_the_replica_and_to_the_primary_past_the_lag(
    pair: tuple[PrivatePostgres, PrivatePostgres], monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, replica = pair
    use_databases(monkeypatch, primary.url, replica.url, max_lag="60s")
    runtime = open_runtime(pool_size=2)
    try:
        with LiveServer(runtime) as server, server.client() as client:
            first = enqueue(client, 1)
            runtime.catch_up()
            eventually(lambda: first in listed(client), "the replica lists the first task")
            shown = reads(client)
            assert shown["target"] == "replica"
            assert shown["replica"] == f"127.0.0.1:{replica.port}/postgres"
            assert shown["read_max_lag_seconds"] == 60.0
            replica.execute("SELECT pg_wal_replay_pause()")
            eventually(
                lambda: replica.execute("SELECT pg_get_wal_replay_pause_state()")[0][0] == "paused",
                "replay paused",
            )
            second = enqueue(client, 2)
            runtime.catch_up()
            # One task is read on the primary: current.
            assert client.get(f"/v1/tasks/{second}").json()["id"] == second
            lagging = eventually(
                lambda: (r := reads(client))["replica_lag_seconds"] and r, "a lag shown"
            )
            assert lagging["target"] == "replica" and lagging["replica_lag_seconds"] > 0
            assert listed(client) == {first}  # the replica has not replayed the second
            _past_the_lag_reads_go_to_the_primary(monkeypatch, {first, second})
            replica.execute("SELECT pg_wal_replay_resume()")
            eventually(lambda: second in listed(client), "the replica lists the second task")
    finally:
        runtime.close()


def _past_the_lag_reads_go_to_the_primary(
    monkeypatch: pytest.MonkeyPatch, everything: set[str]
) -> None:
    """A second server over the same databases, tolerating 1 s: its reads leave the paused
    replica for the primary once the lag passes 1 s."""
    monkeypatch.setenv("LEDGER_READ_MAX_LAG", "1s")
    strict = open_runtime(pool_size=2)
    try:
        with LiveServer(strict) as server, server.client() as client:
            shown = eventually(
                lambda: (r := reads(client))["target"] == "primary" and r, "reads on the primary"
            )
            assert shown["reason"] == "replica lag past read_max_lag"
            assert shown["replica_lag_seconds"] > 1.0
            assert listed(client) == everything
    finally:
        strict.close()


def test_replay_and_audit_verify_read_the_replica_once_it_holds_the_whole_log(
    pair: tuple[PrivatePostgres, PrivatePostgres],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    primary, replica = pair
    use_databases(monkeypatch, primary.url, replica.url, max_lag="1s")
    runtime = open_runtime(pool_size=2)
    try:
        for n in range(3):
            runtime.ledger.enqueue(_echo(n))
        runtime.catch_up()
    finally:
        runtime.close()
    assert main(["audit", "verify"]) == 0
    assert "ok: 3 events verified (read from the replica)" in capsys.readouterr().out
    assert main(["replay", "--out", str(tmp_path / "all.jsonl")]) == 0
    assert "reading the log from the replica" in capsys.readouterr().out
    replica.execute("SELECT pg_wal_replay_pause()")
    try:
        runtime = open_runtime(pool_size=2)
        try:
            runtime.ledger.enqueue(_echo(99))
            runtime.catch_up()
        finally:
            runtime.close()
        # The replica lacks the newest event, and will not have it within 1 s.
        assert main(["audit", "verify"]) == 0
        assert "ok: 4 events verified (read from the primary)" in capsys.readouterr().out
        assert main(["replay", "--out", str(tmp_path / "again.jsonl")]) == 0
        assert "reading the log from the primary" in capsys.readouterr().out
    finally:
        replica.execute("SELECT pg_wal_replay_resume()")


def _echo(n: int) -> Any:
    from execution_ledger.domain.submission import TaskRequest

    return TaskRequest(type_name="echo", args={"n": n})


def multi_host_url(first: PrivatePostgres, second: PrivatePostgres) -> str:
    return (
        f"host=127.0.0.1,127.0.0.1 port={first.port},{second.port} user=postgres "
        "dbname=postgres target_session_attrs=read-write"
    )


def test_a_multi_host_url_finds_the_primary_behind_a_replica(
    pair: tuple[PrivatePostgres, PrivatePostgres], monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, replica = pair
    use_databases(monkeypatch, multi_host_url(replica, primary), None)
    runtime = open_runtime(pool_size=2)
    try:
        task = runtime.ledger.enqueue(_echo(7))
        runtime.catch_up()
        assert runtime.store.load(task.id).id == task.id
    finally:
        runtime.close()


class Enqueuer(threading.Thread):
    """Enqueues ``echo`` tasks one after another, each with its own idempotency key, asking
    again (same key) until it is acknowledged; keeps the acknowledged ids."""

    def __init__(self, url: str, name: str, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.url = url
        self.stop_event = stop
        self.acknowledged: dict[str, str] = {}  # key -> task id
        self.refusals = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            n = 0
            while not self.stop_event.is_set():
                key = f"{self.name}-{n}"
                if self._enqueue(client, key, n):
                    n += 1

    def _enqueue(self, client: httpx.Client, key: str, n: int) -> bool:
        body = {"type": "tally", "args": {"key": key}, "idempotency_key": key}
        try:
            answer = client.post("/v1/tasks", json=body)
        except httpx.HTTPError:
            self.refusals += 1
            time.sleep(0.05)
            return False
        if answer.status_code in (200, 201):
            self.acknowledged[key] = str(answer.json()["id"])
            return True
        self.refusals += 1  # 503 while no primary answers, 500 when a write was cut
        time.sleep(0.05)
        return False


TALLY = """
[task_types.tally]
adapter = "shell"
description = "Appends its key to runs.txt: one line per run."
settings = { argv = ["/bin/sh", "-c", "echo \\"$1\\" >> runs.txt", "sh", "{args[key]}"], cwd = "CWD" }
"""


def tally_config(tmp_path: Path) -> Path:
    """The built-in registry with a ``tally`` task type writing into ``tmp_path`` and a
    10 s heartbeat (an attempt whose claim reply was lost is timed out sooner)."""
    registry = DEFAULT_REGISTRY.read_text().replace('heartbeat = "30s"', 'heartbeat = "10s"')
    config = tmp_path / "ledger.toml"
    config.write_text(registry + TALLY.replace("CWD", str(tmp_path)))
    return config


def test_failover_to_the_promoted_replica_loses_and_doubles_no_task(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    primary, replica = start_pair(synchronous=True)
    try:
        schema = use_databases(monkeypatch, multi_host_url(primary, replica), None)
        runtime = open_runtime(tally_config(tmp_path), pool_size=4)
        try:
            acknowledged = _enqueue_across_failover(runtime, primary, replica)
        finally:
            runtime.close()
        _each_task_once_in_the_log(replica, schema, list(acknowledged.values()))
        runs = (tmp_path / "runs.txt").read_text().split()
        assert sorted(runs) == sorted(acknowledged)  # each acknowledged task ran once
    finally:
        replica.close()
        primary.close()


def _enqueue_across_failover(
    runtime: Runtime, primary: PrivatePostgres, replica: PrivatePostgres
) -> dict[str, str]:
    """Two enqueuers and a worker through a failover; the acknowledged tasks (key -> id),
    once each of them succeeded."""
    stop = threading.Event()
    with LiveServer(runtime, worker=True) as server, server.client() as client:
        enqueuers = [Enqueuer(server.url, f"enqueuer{i}", stop) for i in range(2)]
        for enqueuer in enqueuers:
            enqueuer.start()
        try:
            eventually(lambda: all(len(e.acknowledged) >= 20 for e in enqueuers), "20 each")
            primary.stop("immediate")
            replica.promote()
            after = {e.name: len(e.acknowledged) for e in enqueuers}
            eventually(
                lambda: all(len(e.acknowledged) >= after[e.name] + 20 for e in enqueuers),
                "20 more each on the new primary",
            )
        finally:
            stop.set()
            for enqueuer in enqueuers:
                enqueuer.join(30)
        acknowledged = {k: i for e in enqueuers for k, i in e.acknowledged.items()}
        assert len(set(acknowledged.values())) == len(acknowledged)
        for task_id in acknowledged.values():
            eventually(
                lambda task_id=task_id: (
                    client.get(f"/v1/tasks/{task_id}").json()["state"] == "succeeded"
                ),
                f"task {task_id} succeeded",
            )
    return acknowledged


def _each_task_once_in_the_log(
    new_primary: PrivatePostgres, schema: str, acknowledged: list[str]
) -> None:
    """Every acknowledged task, and no other, in the new primary's log: enqueued once,
    succeeded once. A second ``TaskStarted`` is allowed only after a heartbeat timeout of
    the first: a claim whose commit reached the standby but whose reply the worker lost
    (it never ran that attempt; the tally file shows each task ran once)."""
    rows = new_primary.execute(
        f"SELECT originator_id::text, "
        f"count(*) FILTER (WHERE topic LIKE '%TaskEnqueued'), "
        f"count(*) FILTER (WHERE topic LIKE '%TaskSucceeded'), "
        f"count(*) FILTER (WHERE topic LIKE '%TaskStarted'), "
        f"count(*) FILTER (WHERE topic LIKE '%TaskTimedOut' "
        f"AND convert_from(state, 'UTF8')::jsonb ->> 'kind' = 'heartbeat') "
        f'FROM "{schema}".ledger_events GROUP BY originator_id'
    )
    tasks = {row[0]: row[1:] for row in rows if row[1] > 0}
    assert set(acknowledged) == set(tasks)
    wrong = {t: c for t, c in tasks.items() if c[:2] != (1, 1) or c[2] != 1 + c[3]}
    assert not wrong, wrong


def test_an_unreachable_replica_sends_reads_to_the_primary_and_its_password_is_never_shown(
    ledger_env: None,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "Rep1ica-s3cret"
    nobody = free_port()  # nothing listens there
    monkeypatch.setenv(
        "LEDGER_READ_DATABASE_URL", f"postgresql://reader:{secret}@127.0.0.1:{nobody}/ledger"
    )
    runtime = open_runtime(pool_size=2)
    try:
        with LiveServer(runtime) as server, server.client() as client:
            task = enqueue(client, 1)
            runtime.catch_up()
            assert task in listed(client)
            health = client.get("/healthz")
            shown = health.json()["reads"]
            assert shown["target"] == "primary"
            assert shown["replica"] == f"127.0.0.1:{nobody}/ledger"
            assert shown["reason"].startswith("replica unreachable")
            assert shown["replica_lag_seconds"] is None
            assert secret not in health.text
    finally:
        runtime.close()
    assert "replica unreachable" in caplog.text
    assert secret not in caplog.text


def test_a_replica_without_the_ledgers_schema_leaves_each_read_to_the_primary(
    ledger_env: None,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A replica within its lag that has not replayed the schema yet (here another database
    of the same server, where the schema does not exist): every lag-tolerant read it fails
    is answered by the primary, never with a 500."""
    behind = conninfo.make_conninfo(database_url, dbname="template1")
    monkeypatch.setenv("LEDGER_READ_DATABASE_URL", behind)
    runtime = open_runtime(pool_size=2)
    try:
        with LiveServer(runtime) as server, server.client() as client:
            task = enqueue(client, 1)
            runtime.catch_up()
            assert reads(client)["target"] == "replica"  # within its lag: it is chosen
            assert task in listed(client)
            for path in ("/v1/queues", "/v1/workers", "/v1/task-types/echo", "/v1/activity"):
                answer = client.get(path)
                assert answer.status_code == 200, (path, answer.text)
            queues = {q["name"]: q for q in client.get("/v1/queues").json()["queues"]}
            assert queues["default"]["ready"] == 1
            assert client.get("/v1/task-types/echo").json()["statistics"]["tasks"] == 1
    finally:
        runtime.close()
    assert "a read went to the primary, the replica failed it" in caplog.text
