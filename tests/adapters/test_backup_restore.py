"""Backup and restore as docs/deployment.md tells an operator to do it, on the real
PostgreSQL: a workload on a fresh schema, ``pg_dump`` of that schema, ``pg_restore`` into a
new database, and the runtime opened on the copy: the same tasks in the same states, the
audit chain intact (``ledger audit verify``), and a worker node that goes on working there.
A restore that lost the tail of the log (the events table from an older dump beside a newer
chain) or carries a tampered row is reported by verification at its first position."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from execution_ledger.adapters.cli.main import main
from execution_ledger.adapters.postgres.audit import VerifyReport, verify_chain
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from execution_ledger.projections.audit_chain import AuditChain
from tests.processors.worker_harness import run_nodes_until

CLIENT_BIN = Path("/usr/lib/postgresql/15/bin")


def client_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and (CLIENT_BIN / name).exists():
        found = str(CLIENT_BIN / name)
    return found


PG_DUMP, PG_RESTORE = client_tool("pg_dump"), client_tool("pg_restore")
pytestmark = pytest.mark.skipif(
    PG_DUMP is None or PG_RESTORE is None,
    reason="pg_dump / pg_restore (the PostgreSQL client tools) are not installed",
)


def dump(database_url: str, schema: str, into: Path) -> Path:
    """``pg_dump --format=custom --schema=SCHEMA``: the ledger's schema, whole."""
    assert PG_DUMP is not None
    args = [PG_DUMP, "--format=custom", f"--schema={schema}", f"--file={into}", database_url]
    subprocess.run(args, check=True, capture_output=True, timeout=120)
    return into


def restore(archive: Path, database_url: str, *options: str) -> None:
    assert PG_RESTORE is not None
    args = [PG_RESTORE, "--exit-on-error", f"--dbname={database_url}", *options, str(archive)]
    subprocess.run(args, check=True, capture_output=True, timeout=120)


@pytest.fixture
def new_database(database_url: str) -> Iterator[str]:
    """A database created for the restore (CREATE DATABASE), dropped afterwards."""
    name = f"restore_{uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(database_url, dbname=name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def opened_on(database_url: str, schema: str, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_SCHEMA", schema)
    return open_runtime(pool_size=2)


def workload(runtime: Runtime) -> dict[UUID, TaskState]:
    """Tasks that succeeded, failed, were cancelled, wait on a dependency or are ready."""
    ledger = runtime.ledger
    ran = [ledger.enqueue(TaskRequest("echo", {"n": n})) for n in range(3)]
    ran.append(ledger.enqueue(TaskRequest("fail", {"message": "no"}, max_attempts=1)))
    run_nodes_until(runtime, lambda: all(ledger.task(t.id).state.is_terminal for t in ran))
    cancelled = ledger.cancel(ledger.enqueue(TaskRequest("echo")).id, reason="not needed")
    waiting = ledger.enqueue_graph(
        [TaskRequest("echo", ref="a", run_at=None), TaskRequest("echo", ref="b", depends_on=("a",))]
    )
    tasks = [*ran, cancelled, *waiting]
    runtime.catch_up()
    return {task.id: ledger.task(task.id).state for task in tasks}


def verified(runtime: Runtime) -> VerifyReport:
    return verify_chain(runtime.store, runtime.runners[AuditChain.name])


def superuser_sql(database_url: str, statement: sql.Composable) -> None:
    """A statement the events table's triggers would refuse (as a superuser may)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(statement)


def test_a_restored_dump_has_the_same_tasks_an_intact_chain_and_keeps_working(
    runtime: Runtime,
    schema: str,
    database_url: str,
    new_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    states = workload(runtime)
    before = verified(runtime)
    assert before.ok and before.checked == runtime.store.head_position()
    archive = dump(database_url, schema, tmp_path / "ledger.dump")
    restore(archive, new_database)

    copy = opened_on(new_database, schema, monkeypatch)
    try:
        assert copy.store.head_position() == runtime.store.head_position()
        assert {task_id: copy.ledger.task(task_id).state for task_id in states} == states
        after = verified(copy)
        assert (after.ok, after.checked, after.reason) == (True, before.checked, "ok")
        # ``ledger audit verify`` on the copy, as docs/deployment.md has it.
        assert main(["audit", "verify"]) == 0
        assert f"ok: {before.checked} events verified" in capsys.readouterr().out

        # A node on the copy claims and runs new work; the chain goes on from the restored head.
        new = copy.ledger.enqueue(TaskRequest("add", {"a": 2, "b": 3}))
        run_nodes_until(copy, lambda: copy.ledger.task(new.id).state is TaskState.SUCCEEDED)
        assert copy.ledger.task(new.id).result == {"sum": 5}
        copy.catch_up()
        again = verified(copy)
        assert again.ok and again.checked == copy.store.head_position() > before.checked
    finally:
        copy.close()
    # The original never saw the copy's work.
    assert runtime.store.head_position() == before.checked


def test_a_restore_that_lost_the_tail_of_the_log_is_reported_missing(
    runtime: Runtime,
    schema: str,
    database_url: str,
    new_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workload(runtime)
    older = dump(database_url, schema, tmp_path / "older.dump")
    old_head = runtime.store.head_position()
    workload(runtime)
    assert verified(runtime).ok
    newer = dump(database_url, schema, tmp_path / "newer.dump")
    # A mixed restore: the whole newer dump, then the events table's rows from the older one.
    restore(newer, new_database)
    events = sql.Identifier(schema, "ledger_events")
    superuser_sql(new_database, sql.SQL("TRUNCATE {}").format(events))
    restore(older, new_database, "--data-only", "--disable-triggers", "--table=ledger_events")

    copy = opened_on(new_database, schema, monkeypatch)
    try:
        report = verified(copy)
        assert (report.ok, report.reason) == (False, "missing")
        assert (report.first_bad_position, report.checked) == (old_head + 1, old_head)
        assert main(["audit", "verify"]) == 1
        out = capsys.readouterr().out
        assert f"altered at position {old_head + 1}: missing" in out
    finally:
        copy.close()


def test_a_tampered_row_in_a_restored_copy_is_reported_at_its_position(
    runtime: Runtime,
    schema: str,
    database_url: str,
    new_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workload(runtime)
    restore(dump(database_url, schema, tmp_path / "ledger.dump"), new_database)
    position = runtime.store.head_position() // 2
    superuser_sql(
        new_database,
        sql.SQL("UPDATE {} SET state = state || ' '::bytea WHERE notification_id = {}").format(
            sql.Identifier(schema, "ledger_events"), sql.Literal(position)
        ),
    )
    copy = opened_on(new_database, schema, monkeypatch)
    try:
        report = verified(copy)
        assert (report.ok, report.reason, report.first_bad_position) == (False, "altered", position)
        assert report.checked == position - 1
    finally:
        copy.close()
    assert verified(runtime).ok  # the original is untouched
