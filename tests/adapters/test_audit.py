"""The audit trail on a real PostgreSQL: the events table refuses edits, verification finds
the first position where the log was altered, and the log reads with who / what / when."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from execution_ledger.adapters.cli.audit import add_audit_parser, cmd_audit
from execution_ledger.adapters.postgres.audit import (
    APPEND_ONLY_MESSAGE,
    AuditFilter,
    audit_events,
    protect_events_table,
    verify_chain,
)
from execution_ledger.adapters.postgres.event_store import EVENTS_TABLE
from execution_ledger.adapters.postgres.projection_runner import ProjectionRunner
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.access import AccessDenial
from execution_ledger.domain.errors import InvalidQuery
from execution_ledger.domain.submission import Requester, TaskRequest
from execution_ledger.projections.audit_chain import AuditChain
from tests.helpers import fail, start, succeed


@pytest.fixture
def chain(runtime: Runtime, database_url: str) -> ProjectionRunner:
    """The audit chain's runner, and the guard on the events table (as schema creation
    sets them up)."""
    projection = AuditChain(runtime.settings.schema)
    with runtime.store.transaction() as cursor:
        projection.create(cursor)
    with psycopg.connect(database_url, autocommit=True) as conn:
        protect_events_table(conn, runtime.settings.schema)
    runner = ProjectionRunner(runtime.store, projection)
    runtime.runners[projection.name] = runner
    return runner


@pytest.fixture
def superuser(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A session that bypasses the triggers, as someone tampering with the log would."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        yield conn


def events_table(runtime: Runtime) -> sql.Identifier:
    return sql.Identifier(runtime.settings.schema, EVENTS_TABLE)


def chain_table(runtime: Runtime) -> sql.Identifier:
    return sql.Identifier(runtime.settings.schema, "audit_chain")


def position_of(runtime: Runtime, task_id: UUID, version: int) -> int:
    return next(
        e.position for e in runtime.store.history(task_id) if e.event.originator_version == version
    )


def positions(runtime: Runtime) -> list[int]:
    with runtime.store.transaction() as cursor:
        query = sql.SQL("SELECT notification_id FROM {} ORDER BY 1").format(events_table(runtime))
        return [row["notification_id"] for row in cursor.execute(query)]


def some_history(runtime: Runtime) -> list[UUID]:
    ids = [runtime.ledger.enqueue(TaskRequest("echo", {"n": n})).id for n in range(4)]
    succeed(runtime.store, ids[0])
    fail(runtime.store, ids[1])
    return ids


# -- verification -------------------------------------------------------------------------


def test_an_untouched_log_verifies(runtime: Runtime, chain: ProjectionRunner) -> None:
    some_history(runtime)
    report = verify_chain(runtime.store, chain)
    assert (report.ok, report.reason, report.first_bad_position) == (True, "ok", None)
    assert report.checked == runtime.store.head_position() and report.unchained == 0


def test_events_the_chain_has_not_reached_are_counted_not_checked(
    runtime: Runtime, chain: ProjectionRunner
) -> None:
    some_history(runtime)
    chain.catch_up()
    checked = chain.position()
    runtime.ledger.enqueue(TaskRequest("echo"))
    runtime.ledger.enqueue(TaskRequest("echo"))
    report = verify_chain(runtime.store)  # no catch-up first
    assert (report.ok, report.checked, report.unchained) == (True, checked, 2)
    assert verify_chain(runtime.store, chain).unchained == 0


def test_an_edited_event_is_reported_at_its_position(
    runtime: Runtime, chain: ProjectionRunner, superuser: psycopg.Connection[Any]
) -> None:
    ids = some_history(runtime)
    chain.catch_up()
    target = position_of(runtime, ids[2], 1)
    superuser.execute(
        sql.SQL(
            "UPDATE {} SET state = convert_to(replace(convert_from(state, 'UTF8'), "
            "'\"system\"', '\"mallory\"'), 'UTF8') WHERE notification_id = %s"
        ).format(events_table(runtime)),
        (target,),
    )
    assert runtime.store.history(ids[2])[0].event.principal == "mallory"  # type: ignore[attr-defined]
    report = verify_chain(runtime.store, chain)
    assert (report.ok, report.first_bad_position, report.reason) == (False, target, "altered")
    assert report.checked == positions(runtime).index(target)


def test_an_invisible_byte_change_is_detected_too(
    runtime: Runtime, chain: ProjectionRunner, superuser: psycopg.Connection[Any]
) -> None:
    ids = some_history(runtime)
    chain.catch_up()
    target = position_of(runtime, ids[0], 2)
    before = runtime.store.history(ids[0])[1].event
    superuser.execute(
        sql.SQL("UPDATE {} SET state = state || ' '::bytea WHERE notification_id = %s").format(
            events_table(runtime)
        ),
        (target,),
    )
    assert runtime.store.history(ids[0])[1].event == before  # decodes the same
    report = verify_chain(runtime.store, chain)
    assert (report.first_bad_position, report.reason) == (target, "altered")


def test_an_event_garbled_before_the_chain_reached_it_is_chained_as_undecodable(
    runtime: Runtime, chain: ProjectionRunner, superuser: psycopg.Connection[Any]
) -> None:
    some_history(runtime)
    chain.catch_up()
    runtime.ledger.enqueue(TaskRequest("echo"))
    head = runtime.store.head_position()
    superuser.execute(
        sql.SQL("UPDATE {} SET state = 'garbage'::bytea WHERE notification_id = %s").format(
            events_table(runtime)
        ),
        (head,),
    )
    report = verify_chain(runtime.store, chain)  # chained by its stored bytes (docs/audit.md)
    assert (report.ok, report.undecodable, report.unchained) == (True, (head,), 0)


def test_a_deleted_event_is_reported_missing_at_its_position(
    runtime: Runtime, chain: ProjectionRunner, superuser: psycopg.Connection[Any]
) -> None:
    ids = some_history(runtime)
    chain.catch_up()
    target = position_of(runtime, ids[1], 3)  # the failure
    superuser.execute(
        sql.SQL("DELETE FROM {} WHERE notification_id = %s").format(events_table(runtime)),
        (target,),
    )
    report = verify_chain(runtime.store, chain)
    assert (report.ok, report.first_bad_position, report.reason) == (False, target, "missing")


def test_deleting_the_last_event_is_detected(
    runtime: Runtime, chain: ProjectionRunner, superuser: psycopg.Connection[Any]
) -> None:
    some_history(runtime)
    chain.catch_up()
    head = runtime.store.head_position()
    superuser.execute(
        sql.SQL("DELETE FROM {} WHERE notification_id = %s").format(events_table(runtime)),
        (head,),
    )
    report = verify_chain(runtime.store, chain)
    assert (report.first_bad_position, report.reason) == (head, "missing")


def test_removing_an_event_with_its_chain_row_breaks_the_chain_at_the_next(
    runtime: Runtime, chain: ProjectionRunner, superuser: psycopg.Connection[Any]
) -> None:
    some_history(runtime)
    chain.catch_up()
    third, fourth = positions(runtime)[2:4]
    superuser.execute(
        sql.SQL("DELETE FROM {} WHERE notification_id = %s").format(events_table(runtime)),
        (third,),
    )
    superuser.execute(
        sql.SQL("DELETE FROM {} WHERE position = %s").format(chain_table(runtime)), (third,)
    )
    report = verify_chain(runtime.store, chain)
    assert (report.first_bad_position, report.reason) == (fourth, "chain-broken")


def test_an_unchained_event_below_the_head_is_reported_inserted(
    runtime: Runtime, chain: ProjectionRunner, superuser: psycopg.Connection[Any]
) -> None:
    some_history(runtime)
    chain.catch_up()
    second = positions(runtime)[1]
    superuser.execute(
        sql.SQL("DELETE FROM {} WHERE position = %s").format(chain_table(runtime)), (second,)
    )
    report = verify_chain(runtime.store, chain)
    assert (report.first_bad_position, report.reason) == (second, "inserted")


def test_a_rewritten_event_with_a_matching_event_hash_still_breaks_the_chain(
    runtime: Runtime, chain: ProjectionRunner, superuser: psycopg.Connection[Any]
) -> None:
    some_history(runtime)
    chain.catch_up()
    second = positions(runtime)[1]
    superuser.execute(
        sql.SQL("UPDATE {} SET chain_hash = sha256(chain_hash) WHERE position = %s").format(
            chain_table(runtime)
        ),
        (second,),
    )
    report = verify_chain(runtime.store, chain)
    assert (report.first_bad_position, report.reason) == (second, "chain-broken")


@pytest.mark.parametrize(
    ("column", "change"),
    [
        ("originator_id", "'00000000-0000-0000-0000-000000000000'::uuid"),
        ("originator_version", "originator_version + 1"),
        ("topic", "'domain.task:Task.TaskCancelled'"),
    ],
)
def test_a_chain_row_whose_identifying_field_was_changed_is_reported_at_the_first(
    runtime: Runtime, chain: ProjectionRunner, column: str, change: str
) -> None:
    """The hashes stay right (they are recomputed from the log): only the comparison of the
    row's own id, version and topic with the event's can tell."""
    some_history(runtime)
    chain.catch_up()
    chained = positions(runtime)
    first, later = chained[2], chained[4]
    with psycopg.connect(runtime.store.database_url, autocommit=True) as owner:
        owner.execute(
            sql.SQL("UPDATE {} SET {} = {} WHERE position = ANY(%s)").format(
                chain_table(runtime), sql.Identifier(column), sql.SQL(change)
            ),
            ([first, later],),
        )
    report = verify_chain(runtime.store, chain)
    assert (report.ok, report.first_bad_position, report.reason) == (False, first, "chain-broken")
    assert report.detail == f"the chain row's {column} differs from the event's"
    assert report.checked == chained.index(first)


# -- the append-only guard ----------------------------------------------------------------


def test_the_events_table_refuses_update_delete_and_truncate(
    runtime: Runtime, chain: ProjectionRunner, database_url: str
) -> None:
    some_history(runtime)
    table = events_table(runtime)
    statements = [
        sql.SQL("UPDATE {} SET topic = topic").format(table),
        sql.SQL("DELETE FROM {} WHERE notification_id = 1").format(table),
        sql.SQL("TRUNCATE {}").format(table),
    ]
    with psycopg.connect(database_url, autocommit=True) as conn:
        for statement in statements:
            with pytest.raises(psycopg.errors.RaiseException, match=APPEND_ONLY_MESSAGE):
                conn.execute(statement)
    runtime.ledger.enqueue(TaskRequest("echo"))  # appending still works
    assert verify_chain(runtime.store, chain).ok


def test_a_service_role_without_superuser_cannot_edit_or_bypass(
    runtime: Runtime, chain: ProjectionRunner, database_url: str
) -> None:
    some_history(runtime)
    schema = sql.Identifier(runtime.settings.schema)
    with psycopg.connect(database_url) as conn:  # one transaction, rolled back: no role left
        role = sql.Identifier(f"svc_{runtime.settings.schema}")
        conn.execute(sql.SQL("CREATE ROLE {}").format(role))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                events_table(runtime), role
            )
        )
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(role))
        for statement, error in [
            (sql.SQL("UPDATE {} SET topic = topic"), psycopg.errors.RaiseException),
            (sql.SQL("DELETE FROM {}"), psycopg.errors.RaiseException),
            (
                sql.SQL("SET session_replication_role = replica"),
                psycopg.errors.InsufficientPrivilege,
            ),
            (sql.SQL("ALTER TABLE {} DISABLE TRIGGER ALL"), psycopg.errors.InsufficientPrivilege),
        ]:
            with pytest.raises(error), conn.transaction():
                conn.execute(statement.format(events_table(runtime)))
        conn.rollback()


def test_protecting_twice_changes_nothing(
    runtime: Runtime, chain: ProjectionRunner, database_url: str
) -> None:
    with runtime.store.recorder.datastore.get_connection() as pooled:  # dict rows, no autocommit
        protect_events_table(pooled, runtime.settings.schema)
    with psycopg.connect(database_url, autocommit=True) as conn:
        protect_events_table(conn, runtime.settings.schema)
        names = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(%s) ORDER BY tgname",
            (events_table(runtime).as_string(conn),),
        ).fetchall()
    assert [n for (n,) in names] == ["ledger_events_append_only", "ledger_events_no_truncate"]


# -- the log: who, what, when -------------------------------------------------------------


def test_each_event_says_who_did_it_and_for_whom(runtime: Runtime, chain: ProjectionRunner) -> None:
    alice = Requester(principal="alice", role="admin")
    done = runtime.ledger.enqueue(TaskRequest("echo"), alice)
    cancelled = runtime.ledger.enqueue(TaskRequest("echo"), alice)
    start(runtime.store, done.id, worker="w1")
    task = runtime.store.load(done.id)
    task.succeed(1, {"ok": True})
    runtime.store.save(task)
    runtime.ledger.cancel(cancelled.id, by="bob", reason="not needed")
    runtime.ledger.pause_queue("default", by="carol")

    entries = audit_events(runtime.store).entries
    who = [(e.type, e.principal, e.actor) for e in entries if e.type != "QueueRegistered"]
    assert who == [
        ("TaskEnqueued", "alice", "alice"),
        ("TaskEnqueued", "alice", "alice"),
        ("TaskStarted", "alice", "w1"),
        ("TaskSucceeded", "alice", "w1"),
        ("TaskCancelled", "bob", "bob"),
        ("QueuePaused", "carol", "carol"),
    ]
    cancel = next(e for e in entries if e.type == "TaskCancelled")
    assert cancel.data["reason"] == "not needed" and cancel.subject_id == cancelled.id


def test_the_log_filters_by_task_principal_actor_type_and_time(runtime: Runtime) -> None:
    alice = Requester(principal="alice", role="admin")
    mine = runtime.ledger.enqueue(TaskRequest("echo"), alice)
    other = runtime.ledger.enqueue(TaskRequest("echo"))
    succeed(runtime.store, mine.id)
    fail(runtime.store, other.id, retry=True)
    runtime.ledger.cancel(other.id, by="bob")

    def types(where: AuditFilter) -> list[str]:
        return [e.type for e in audit_events(runtime.store, where).entries]

    assert types(AuditFilter(task_id=mine.id)) == ["TaskEnqueued", "TaskStarted", "TaskSucceeded"]
    assert types(AuditFilter(principal="alice")) == ["TaskEnqueued", "TaskStarted", "TaskSucceeded"]
    assert types(AuditFilter(principal="bob")) == ["TaskCancelled"]
    assert types(AuditFilter(actor="test-worker")) == [
        "TaskStarted",
        "TaskSucceeded",
        "TaskStarted",
        "TaskFailed",
    ]
    assert types(AuditFilter(types=("TaskFailed", "TaskCancelled"))) == [
        "TaskFailed",
        "TaskCancelled",
    ]
    assert types(AuditFilter(task_id=other.id, types=("TaskRetryScheduled",))) == [
        "TaskRetryScheduled"
    ]
    now = datetime.now(UTC)
    assert types(AuditFilter(types=("TaskEnqueued",), until=now)) == [
        "TaskEnqueued",
        "TaskEnqueued",
    ]
    assert types(AuditFilter(since=now)) == []
    assert types(AuditFilter(since=now - timedelta(minutes=5), principal="bob")) == [
        "TaskCancelled"
    ]


def test_denied_requests_are_in_the_log_and_in_the_chain(
    runtime: Runtime, chain: ProjectionRunner
) -> None:
    runtime.ledger.enqueue(TaskRequest("echo"))
    runtime.store.save(AccessDenial.record("mallory", "tasks.cancel", "role tester may not"))
    page = audit_events(runtime.store, AuditFilter(types=("AccessDenied",)))
    [denied] = page.entries
    assert (denied.principal, denied.actor, denied.aggregate) == (
        "mallory",
        "mallory",
        "AccessDenial",
    )
    assert denied.data["action"] == "tasks.cancel"
    assert [
        e.type for e in audit_events(runtime.store, AuditFilter(principal="mallory")).entries
    ] == ["AccessDenied"]
    report = verify_chain(runtime.store, chain)
    assert report.ok and report.checked == runtime.store.head_position()


def test_the_log_pages_with_a_limit_and_an_after_cursor(runtime: Runtime) -> None:
    for n in range(7):
        runtime.ledger.enqueue(TaskRequest("echo", {"n": n}))
    where = AuditFilter(types=("TaskEnqueued",))
    seen: list[int] = []
    after: int | None = 0
    while after is not None:
        page = audit_events(runtime.store, where, after=after, limit=3)
        seen += [e.data["args"]["n"] for e in page.entries]
        after = page.next_after
    assert seen == list(range(7))
    # A narrow scan window answers with what it read, and says where to go on.
    narrow = audit_events(runtime.store, where, after=0, limit=100, scan_window=2)
    assert narrow.next_after == 2 and len(narrow.entries) <= 2


def test_bad_filters_are_refused() -> None:
    with pytest.raises(InvalidQuery):
        AuditFilter(types=("Task|.*",))
    with pytest.raises(InvalidQuery):
        AuditFilter(since=datetime(2026, 1, 1))


# -- the command line ----------------------------------------------------------------------


def run(runtime: Runtime, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="ledger")
    add_audit_parser(parser.add_subparsers(dest="command"))
    code = cmd_audit(runtime, parser.parse_args(list(argv)))
    return code, capsys.readouterr().out


def test_ledger_audit_verify_says_ok_or_where_the_log_was_altered(
    runtime: Runtime,
    chain: ProjectionRunner,
    superuser: psycopg.Connection[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    some_history(runtime)
    code, out = run(runtime, capsys, "audit", "verify")
    assert code == 0 and out.startswith("ok")
    second = positions(runtime)[1]
    superuser.execute(
        sql.SQL("DELETE FROM {} WHERE notification_id = %s").format(events_table(runtime)),
        (second,),
    )
    code, out = run(runtime, capsys, "audit", "verify", "--json")
    assert code == 1
    assert json.loads(out) | {"detail": ""} == {
        "ok": False,
        "checked": 1,
        "first_bad_position": second,
        "reason": "missing",
        "detail": "",
        "unchained": 0,
        "undecodable": [],
    }


def test_ledger_audit_log_lists_filtered_events(
    runtime: Runtime, chain: ProjectionRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    task = runtime.ledger.enqueue(TaskRequest("echo"), Requester("alice", "admin"))
    runtime.ledger.cancel(task.id, by="bob")
    code, out = run(runtime, capsys, "audit", "log", "--task", str(task.id), "--json")
    listed = json.loads(out)
    assert code == 0
    assert [(e["type"], e["principal"]) for e in listed["events"]] == [
        ("TaskEnqueued", "alice"),
        ("TaskCancelled", "bob"),
    ]
    code, out = run(runtime, capsys, "audit", "log", "--principal", "bob", "--since", "1h")
    assert code == 0 and "bob" in out and "ali" not in out  # a table (narrow in tests)


def test_get_audit_verify_reports_ok_then_the_altered_position(
    runtime: Runtime, chain: ProjectionRunner, superuser: psycopg.Connection[Any]
) -> None:
    from tests.adapters.http.live_server import LiveServer

    ids = some_history(runtime)
    with LiveServer(runtime) as live, live.client() as client:
        intact = client.get("/v1/audit/verify").json()
        target = position_of(runtime, ids[3], 1)
        superuser.execute(
            sql.SQL("UPDATE {} SET state = state || ' '::bytea WHERE notification_id = %s").format(
                events_table(runtime)
            ),
            (target,),
        )
        altered = client.get("/v1/audit/verify").json()
    assert (intact["ok"], intact["reason"]) == (True, "ok")
    assert (altered["ok"], altered["first_bad_position"], altered["reason"]) == (
        False,
        target,
        "altered",
    )
