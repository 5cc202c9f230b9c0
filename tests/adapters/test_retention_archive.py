"""Retention and archive on a real PostgreSQL: old stretches of the log go to Parquet
segments, tasks past retention leave the live tables, and verification and replay still
span the archived and the live history."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import jsonschema
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from execution_ledger.adapters.cli.main import main
from execution_ledger.adapters.config_file import DEFAULT_REGISTRY
from execution_ledger.adapters.dataset.replay import Replay
from execution_ledger.adapters.http.response_schemas import AUDIT_REPORT
from execution_ledger.adapters.postgres.audit import verify_chain
from execution_ledger.adapters.postgres.event_store import EVENTS_TABLE
from execution_ledger.adapters.retention import archive_sql
from execution_ledger.adapters.retention.archiver import Archiver
from execution_ledger.adapters.retention.periodic import archive_periodically
from execution_ledger.adapters.retention.segments import (
    ArchiveBusy,
    ArchiveDir,
    ArchiveError,
    configured_archive,
)
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.access import AccessDenial
from execution_ledger.domain.errors import TaskNotFound, UnknownDependency
from execution_ledger.domain.submission import TaskRequest
from tests.adapters.http.live_server import LiveServer
from tests.adapters.test_db_grant import create_role, drop_role
from tests.conftest import write_config
from tests.helpers import fail, now, start, succeed

RETENTION = """
[retention]
succeeded = "30d"
failed = "90d"
cancelled = "30d"
access_denied = "30d"
archive_dir = "{archive}"
segment_events = 7
"""


@pytest.fixture
def rt(ledger_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    text = DEFAULT_REGISTRY.read_text() + RETENTION.format(archive=tmp_path / "archive")
    monkeypatch.setenv("LEDGER_CONFIG", str(write_config(tmp_path, text)))
    runtime = open_runtime(pool_size=2)
    yield runtime
    runtime.close()


@dataclasses.dataclass
class History:
    succeeded: list[UUID]
    failed: list[UUID]
    running: UUID
    ready: UUID


def make_history(rt: Runtime) -> History:
    """Six succeeded and two failed tasks, one running, one waiting to run; projected."""
    ids = [rt.ledger.enqueue(TaskRequest("echo", {"n": n})).id for n in range(10)]
    for task_id in ids[:6]:
        succeed(rt.store, task_id, {"n": str(task_id)})
    for task_id in ids[6:8]:
        fail(rt.store, task_id)
    start(rt.store, ids[8])
    rt.catch_up()
    return History(ids[:6], ids[6:8], ids[8], ids[9])


def archiver(rt: Runtime, days: float, **kwargs: Any) -> Archiver:
    """An archiver whose clock is ``days`` ahead."""
    policy = rt.settings.config.retention
    assert policy is not None
    archive = archive_of(rt)
    later = now() + timedelta(days=days)
    return Archiver(rt.database_url, rt.settings.schema, policy, archive, lambda: later, **kwargs)


def archive_of(rt: Runtime) -> ArchiveDir:
    archive = configured_archive(rt.settings.config.retention, rt.settings.schema)
    assert archive is not None
    return archive


def count(rt: Runtime, table: str, where: str = "true") -> int:
    with psycopg.connect(rt.database_url) as conn:
        query = sql.SQL("SELECT count(*) FROM {} WHERE " + where).format(
            sql.Identifier(rt.settings.schema, table)
        )
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def live_counts(rt: Runtime) -> dict[str, int]:
    tables = (EVENTS_TABLE, "task_view", "readiness_nodes", "attempt_dataset", "audit_chain")
    return {table: count(rt, table) for table in tables}


def replay_bytes(rt: Runtime, **kwargs: Any) -> bytes:
    return b"".join(Replay(rt.store, **kwargs).chunks("jsonl"))


def verify(rt: Runtime, archive: ArchiveDir | None = None) -> Any:
    return verify_chain(rt.store, rt.runners["audit_chain"], None, archive or archive_of(rt))


def test_archive_moves_tasks_past_retention_out_of_the_live_tables(rt: Runtime) -> None:
    history = make_history(rt)
    before = live_counts(rt)
    report = archiver(rt, days=40).run()
    # Only the six succeeded tasks are past 30 days; failed ones are kept 90 days.
    assert report.tasks_removed == 6
    assert report.written and report.events_archived == report.through
    after = live_counts(rt)
    assert after[EVENTS_TABLE] == before[EVENTS_TABLE] - 6 * 3
    assert after["task_view"] == before["task_view"] - 6 == 4
    assert after["attempt_dataset"] == before["attempt_dataset"] - 6
    assert after["audit_chain"] < before["audit_chain"]
    for task_id in history.succeeded:
        with pytest.raises(TaskNotFound):
            rt.ledger.history(task_id)
    for task_id in [*history.failed, history.running, history.ready]:
        assert rt.ledger.task(task_id).id == task_id  # still whole in the live log
    manifests = archive_of(rt).manifests()
    assert [m.stem for m in manifests] == report.written
    assert manifests[0].first_position == 1 and manifests[-1].last_position == report.through
    assert sum(m.events for m in manifests) == report.events_archived


def test_verification_spans_the_archive_and_the_live_log(rt: Runtime) -> None:
    make_history(rt)
    total = count(rt, EVENTS_TABLE)
    archiver(rt, days=40).run()
    rt.ledger.enqueue(TaskRequest("echo", {"after": True}))  # chained from the archive head
    rt.catch_up()
    report = verify(rt)
    assert report.ok, report
    assert report.checked == total + 1
    assert "archived events" in report.detail


def test_verification_without_the_archive_is_not_ok(rt: Runtime) -> None:
    make_history(rt)
    archiver(rt, days=40).run()
    report = verify_chain(rt.store, rt.runners["audit_chain"])
    assert not report.ok and report.reason == "archive-missing"


def test_a_tampered_segment_is_found_at_its_row(rt: Runtime) -> None:
    make_history(rt)
    archiver(rt, days=40).run()
    archive = archive_of(rt)
    manifest = archive.manifests()[1]
    path = archive.parquet_path(manifest)
    table = pq.read_table(path)
    states = table.column("state").to_pylist()
    states[2] = states[2].replace(b'"n"', b'"N"') if b'"n"' in states[2] else states[2] + b" "
    tampered = table.set_column(4, "state", pa.array(states, pa.binary()))
    pq.write_table(tampered, path, compression="zstd")
    report = verify(rt)
    assert not report.ok
    assert report.reason == "archive-altered"
    assert report.first_bad_position == table.column("position").to_pylist()[2]


def test_a_segment_whose_bytes_changed_is_found(rt: Runtime) -> None:
    make_history(rt)
    archiver(rt, days=40).run()
    archive = archive_of(rt)
    manifest = archive.manifests()[0]
    with open(archive.parquet_path(manifest), "ab") as file:
        file.write(b"\0")
    report = verify(rt)
    assert not report.ok and report.reason == "archive-altered"


def test_a_deleted_segment_is_found(rt: Runtime) -> None:
    make_history(rt)
    archiver(rt, days=40).run()
    archive = archive_of(rt)
    manifest = archive.manifests()[1]
    archive.parquet_path(manifest).unlink()
    (archive.segments / f"{manifest.stem}.json").unlink()
    report = verify(rt)
    assert not report.ok and report.reason == "archive-missing"
    assert report.first_bad_position == manifest.first_position


def test_the_last_segment_deleted_is_found(rt: Runtime) -> None:
    make_history(rt)
    archiver(rt, days=40).run()
    archive = archive_of(rt)
    manifest = archive.manifests()[-1]
    archive.parquet_path(manifest).unlink()
    (archive.segments / f"{manifest.stem}.json").unlink()
    report = verify(rt)
    assert not report.ok and report.reason == "archive-missing"


def test_a_live_event_below_the_archive_head_that_was_altered_is_found(
    rt: Runtime, database_url: str
) -> None:
    history = make_history(rt)
    archiver(rt, days=40).run()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            sql.SQL(
                "UPDATE {} SET state = state || ' '::bytea WHERE originator_id = %s "
                "AND originator_version = 1"
            ).format(sql.Identifier(rt.settings.schema, EVENTS_TABLE)),
            (history.failed[0],),
        )
    report = verify(rt)
    assert not report.ok and report.reason == "altered"


def test_replay_across_archive_and_live_log_gives_the_same_rows(rt: Runtime) -> None:
    make_history(rt)
    before = replay_bytes(rt)
    archive = archive_of(rt)
    archiver(rt, days=40).run()
    assert replay_bytes(rt, archive=archive) == before
    archiver(rt, days=100).run()  # the failed tasks go too, with no new segment
    assert replay_bytes(rt, archive=archive) == before
    assert before.count(b"\n") == 8  # six successes and two failures


def test_replay_without_the_archive_is_refused(rt: Runtime) -> None:
    make_history(rt)
    archiver(rt, days=40).run()
    with pytest.raises(ArchiveError, match="archive_dir"):
        replay_bytes(rt)


def test_dry_run_changes_nothing(rt: Runtime) -> None:
    make_history(rt)
    before = live_counts(rt)
    report = archiver(rt, days=40).run(dry_run=True)
    assert report.dry_run and report.tasks_removed == 6 and report.events_archived > 0
    assert live_counts(rt) == before
    assert archive_of(rt).manifests() == []
    assert not archive_of(rt).segments.exists()


def test_a_crash_between_writing_and_deleting_is_completed_by_the_next_run(
    rt: Runtime,
) -> None:
    make_history(rt)
    before = live_counts(rt)
    replayed = replay_bytes(rt)

    def crash() -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        archiver(rt, days=40, before_delete=crash).run()
    assert live_counts(rt) == before  # nothing deleted
    written = [m.stem for m in archive_of(rt).manifests()]
    assert written
    verify_report = verify(rt)
    assert verify_report.ok, verify_report  # segments past the head are not history yet
    report = archiver(rt, days=40).run()
    assert report.adopted == written and report.written == []
    assert report.tasks_removed == 6
    assert verify(rt).ok
    assert replay_bytes(rt, archive=archive_of(rt)) == replayed


def test_a_half_written_segment_is_written_again(rt: Runtime) -> None:
    make_history(rt)
    segments = archive_of(rt).segments
    segments.mkdir(parents=True)
    (segments / "000000000001-000000000007.parquet.partial").write_bytes(b"torn")
    (segments / "000000000001-000000000007.parquet").write_bytes(b"no manifest")
    report = archiver(rt, days=40).run()
    assert report.written[0] == "000000000001-000000000007"
    assert verify(rt).ok


def test_running_and_young_tasks_are_never_archived(rt: Runtime) -> None:
    history = make_history(rt)
    report = archiver(rt, days=400).run()
    # Even a year later: the running task and the one not started stay whole.
    assert report.tasks_removed == 8
    assert rt.ledger.task(history.running).state == "running"
    assert rt.ledger.task(history.ready).state == "ready"
    assert count(rt, "task_view") == 2
    report = archiver(rt, days=1).run()
    assert report.tasks_removed == 0 and report.written == []


def test_a_second_run_archives_on_from_the_head(rt: Runtime) -> None:
    make_history(rt)
    first = archiver(rt, days=40).run()
    more = [rt.ledger.enqueue(TaskRequest("echo", {"m": n})).id for n in range(3)]
    for task_id in more:
        succeed(rt.store, task_id)
    rt.catch_up()
    second = archiver(rt, days=40).run()
    assert second.archived_to == first.through and second.through > first.through
    assert second.tasks_removed == 3
    manifests = archive_of(rt).manifests()
    assert manifests[-1].last_position == second.through
    assert verify(rt).ok


def test_the_audit_chain_rebuilt_after_archival_still_verifies(rt: Runtime) -> None:
    make_history(rt)
    archiver(rt, days=40).run()
    rt.runners["audit_chain"].rebuild()
    assert verify(rt).ok


def test_events_are_deleted_only_through_the_archive_and_only_below_its_head(
    rt: Runtime, database_url: str
) -> None:
    make_history(rt)
    report = archiver(rt, days=40).run()
    events = sql.Identifier(rt.settings.schema, EVENTS_TABLE)
    function = sql.Identifier(rt.settings.schema, "ledger_archive_delete")
    with psycopg.connect(database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE notification_id > %s").format(events),
                (report.through,),
            )
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"), conn.transaction():
            conn.execute("SELECT set_config('ledger.archived_through', '999999999', true)")
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE notification_id > %s").format(events),
                (report.through,),
            )
        with pytest.raises(psycopg.errors.RaiseException, match="not archived"):
            conn.execute(
                sql.SQL("SELECT * FROM {}(%s, %s)").format(function), (report.through + 1, [])
            )


def test_an_archive_dir_that_ends_before_the_database_head_is_refused(
    rt: Runtime, tmp_path: Path
) -> None:
    make_history(rt)
    archiver(rt, days=40).run()
    policy = rt.settings.config.retention
    assert policy is not None
    other = ArchiveDir(tmp_path / "elsewhere", rt.settings.schema)
    with pytest.raises(ArchiveError, match="older copy"):
        Archiver(rt.database_url, rt.settings.schema, policy, other, now).run()


# -- the command line ---------------------------------------------------------------------


def test_ledger_archive_reports_and_audit_verify_spans_the_archive(
    ledger_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    retention = RETENTION.format(archive=tmp_path / "archive").replace('"30d"', '"1ms"')
    path = write_config(tmp_path, DEFAULT_REGISTRY.read_text() + retention)
    monkeypatch.setenv("LEDGER_CONFIG", str(path))
    runtime = open_runtime(pool_size=2)
    try:
        make_history(runtime)
        assert main(["archive", "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "would archive positions 1.." in out
        assert "would remove 6 tasks and 0 refused requests" in out
        assert archive_of(runtime).manifests() == []
        assert main(["archive"]) == 0
        out = capsys.readouterr().out
        assert "archived positions 1.." in out and "removed 6 tasks" in out
        assert main(["archive"]) == 0
        assert "nothing new to archive" in capsys.readouterr().out
        assert main(["audit", "verify"]) == 0
        assert "archived events in 4 segments verified" in capsys.readouterr().out
        assert count(runtime, "task_view") == 4
    finally:
        runtime.close()


def test_ledger_archive_without_an_archive_dir_is_refused(
    ledger_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["archive"]) == 2
    assert "set [retention] archive_dir" in capsys.readouterr().err


def test_ledger_archive_refuses_a_bad_position(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["archive", "--until", "-3"])
    assert exit_.value.code == 2
    assert "not a log position" in capsys.readouterr().err


def test_a_bad_retention_table_names_its_line(
    ledger_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = DEFAULT_REGISTRY.read_text() + '\n[retention]\nsucceeded = "soon"\n'
    path = write_config(tmp_path, text)
    monkeypatch.setenv("LEDGER_CONFIG", str(path))
    assert main(["archive"]) == 2
    line = text.splitlines().index('succeeded = "soon"') + 1
    assert f"{path}:{line}: cannot read duration" in capsys.readouterr().err


def test_the_service_role_may_not_archive(
    rt: Runtime, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make_history(rt)
    role = create_role(database_url)
    try:
        assert main(["db", "grant", role]) == 0
        capsys.readouterr()
        service = psycopg.conninfo.make_conninfo(database_url, user=role)
        policy = rt.settings.config.retention
        assert policy is not None
        later = now() + timedelta(days=40)
        service_archiver = Archiver(
            service, rt.settings.schema, policy, archive_of(rt), lambda: later
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            service_archiver.run()
        assert count(rt, "task_view") == 10  # nothing removed
        function = sql.Identifier(rt.settings.schema, "ledger_archive_delete")
        with (
            psycopg.connect(service, autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(sql.SQL("SELECT * FROM {}(1, '{{}}')").format(function))
        assert archiver(rt, days=40).run().tasks_removed == 6  # the owner may
    finally:
        drop_role(database_url, role)


@pytest.mark.asyncio
async def test_a_node_archives_every_archive_every(
    ledger_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    retention = RETENTION.format(archive=tmp_path / "archive").replace('"30d"', '"1ms"')
    text = DEFAULT_REGISTRY.read_text() + retention + 'archive_every = "50ms"\n'
    monkeypatch.setenv("LEDGER_CONFIG", str(write_config(tmp_path, text)))
    runtime = open_runtime(pool_size=2)
    stop = asyncio.Event()

    async def blocking(function: Any, *args: Any) -> Any:
        return await asyncio.to_thread(function, *args)

    try:
        make_history(runtime)
        task = asyncio.create_task(archive_periodically(runtime, stop, blocking))
        deadline = asyncio.get_running_loop().time() + 30
        while count(runtime, "task_view") > 4:
            assert asyncio.get_running_loop().time() < deadline, "nothing was archived"
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert archive_of(runtime).manifests()
        assert verify(runtime).ok
    finally:
        stop.set()
        runtime.close()


@pytest.mark.asyncio
async def test_no_archive_every_no_archival(rt: Runtime) -> None:
    stop = asyncio.Event()

    async def blocking(function: Any, *args: Any) -> Any:
        raise AssertionError("nothing should run")

    await asyncio.wait_for(archive_periodically(rt, stop, blocking), 1)  # returns at once


def test_an_archived_task_is_gone_for_retries_dependencies_and_keys(rt: Runtime) -> None:
    task, created = rt.ledger.enqueue_once(TaskRequest("echo", {}, idempotency_key="nightly"))
    assert created
    fail(rt.store, task.id)
    rt.catch_up()
    assert archiver(rt, days=100).run().tasks_removed == 1
    with pytest.raises(TaskNotFound):
        rt.ledger.retry(task.id)
    with pytest.raises(UnknownDependency):
        rt.ledger.enqueue(TaskRequest("echo", {}, depends_on=(str(task.id),)))
    again, created = rt.ledger.enqueue_once(TaskRequest("echo", {}, idempotency_key="nightly"))
    assert created and again.id != task.id  # the key went with the task


def test_a_crash_in_the_middle_of_the_deletions_is_completed_by_the_next_run(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = make_history(rt)
    replayed = replay_bytes(rt)
    monkeypatch.setattr(archive_sql, "CHUNK", 2)  # three batches of two tasks
    real = archive_sql.delete_live_rows
    calls = []

    def crash_on_second_batch(*args: Any) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("killed")
        real(*args)

    monkeypatch.setattr(archive_sql, "delete_live_rows", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="killed"):
        archiver(rt, days=40).run()
    assert count(rt, "task_view") == 8  # the first batch went, whole; the second rolled back
    report = verify(rt)
    assert report.ok, report
    monkeypatch.setattr(archive_sql, "delete_live_rows", real)
    again = archiver(rt, days=40).run()
    assert again.written == [] and again.tasks_removed == 4
    assert count(rt, "task_view") == 4
    for task_id in history.succeeded:
        with pytest.raises(TaskNotFound):
            rt.ledger.history(task_id)
    assert verify(rt).ok
    assert replay_bytes(rt, archive=archive_of(rt)) == replayed


def test_the_dataset_and_verification_over_http_and_the_cli_span_the_archive(
    rt: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_history(rt)
    before = replay_bytes(rt)
    archiver(rt, days=40).run()
    with LiveServer(rt) as live, live.client() as client:
        response = client.get("/v1/dataset")
        assert response.status_code == 200
        assert response.content == before
        verified = client.get("/v1/audit/verify").json()
        assert verified["ok"] and "archived events" in verified["detail"]
    out = tmp_path / "dataset.jsonl"
    assert main(["replay", "--out", str(out)]) == 0
    assert out.read_bytes() == before


def test_the_dataset_of_an_archived_log_without_its_archive_is_refused(
    rt: Runtime, ledger_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_history(rt)
    archiver(rt, days=40).run()
    monkeypatch.delenv("LEDGER_CONFIG")  # the built-in registry: no [retention]
    bare = open_runtime(pool_size=2)
    try:
        with LiveServer(bare) as live, live.client() as client:
            response = client.get("/v1/dataset")
            verified = client.get("/v1/audit/verify").json()
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "archive_error" and "archive_dir" in error["message"]
        assert not verified["ok"] and verified["reason"] == "archive-missing"
        jsonschema.validate(verified, AUDIT_REPORT)  # the reason is one the API documents
    finally:
        bare.close()


def test_nothing_is_archived_past_what_every_projection_has_read(rt: Runtime) -> None:
    make_history(rt)
    late = rt.ledger.enqueue(TaskRequest("echo", {"late": True})).id
    succeed(rt.store, late)  # not projected yet
    report = archiver(rt, days=40).run()
    assert report.tasks_removed == 6
    assert rt.ledger.task(late).state == "succeeded"  # its events are past the bound
    with psycopg.connect(rt.database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE name = 'dataset'").format(
                sql.Identifier(rt.settings.schema, "projection_positions")
            )
        )
    rt.runners["task_view"].catch_up()
    again = archiver(rt, days=40).run()  # the dataset has read nothing: no further
    assert again.through == report.through and again.tasks_removed == 0


def test_refused_requests_past_their_age_are_archived_too(rt: Runtime) -> None:
    make_history(rt)
    denial = AccessDenial.record("mallory", "tasks.cancel", "role tester may not")
    rt.store.save(denial)
    rt.catch_up()
    young = archiver(rt, days=10).run()
    assert young.denials_removed == 0 and young.tasks_removed == 0
    report = archiver(rt, days=40).run()
    assert report.denials_removed == 1 and report.tasks_removed == 6
    assert count(rt, EVENTS_TABLE, f"originator_id = '{denial.id}'") == 0
    assert verify(rt).ok


def test_attempt_rows_a_learn_hook_has_not_had_stay_until_it_has(rt: Runtime) -> None:
    make_history(rt)
    positions = sql.Identifier(rt.settings.schema, "projection_positions")
    with psycopg.connect(rt.database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {} (name, position) VALUES ('learn_hooks:echo', 1)").format(
                positions
            )
        )
    rows = count(rt, "attempt_dataset")
    assert archiver(rt, days=40).run().tasks_removed == 6
    assert count(rt, "attempt_dataset") == rows  # the hook has not been handed them
    with psycopg.connect(rt.database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET position = 1000000 WHERE name = 'learn_hooks:echo'").format(
                positions
            )
        )
    assert archiver(rt, days=40).run().tasks_removed == 0
    assert count(rt, "attempt_dataset") == rows - 6


def test_one_archival_at_a_time(rt: Runtime, database_url: str) -> None:
    make_history(rt)
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute(
            "SELECT pg_advisory_lock(hashtextextended(%s, 0))",
            (f"archive:{rt.settings.schema}",),
        )
        with pytest.raises(ArchiveBusy, match="another archival"):
            archiver(rt, days=40).run()
        assert archive_of(rt).manifests() == []
    assert archiver(rt, days=40).run().tasks_removed == 6  # the lock went with its session


def test_a_live_event_below_the_archive_head_that_was_deleted_is_found(
    rt: Runtime, database_url: str
) -> None:
    history = make_history(rt)
    archiver(rt, days=40).run()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        row = conn.execute(
            sql.SQL(
                "DELETE FROM {} WHERE originator_id = %s AND originator_version = 2 "
                "RETURNING notification_id"
            ).format(sql.Identifier(rt.settings.schema, EVENTS_TABLE)),
            (history.failed[0],),
        ).fetchone()
    assert row is not None
    report = verify(rt)
    assert not report.ok and report.reason == "missing"
    assert report.first_bad_position == row[0]
