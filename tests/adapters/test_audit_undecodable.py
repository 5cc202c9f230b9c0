"""A row in the events table whose event does not decode (a topic that does not resolve, a
state that does not parse), written by the table's owner with plain SQL: the audit chain
chains it by its stored bytes and ``ledger audit verify`` lists it; the other projections
skip it with a warning naming its position and go on with the later events."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from execution_ledger.adapters.cli.audit import add_audit_parser, cmd_audit
from execution_ledger.adapters.event_log import EventFilter, read_events
from execution_ledger.adapters.postgres.audit import verify_chain
from execution_ledger.adapters.postgres.event_store import EVENTS_TABLE
from execution_ledger.adapters.postgres.projection_runner import POSITIONS_TABLE, ProjectionRunner
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.projections.audit_chain import AuditChain
from tests.helpers import succeed


def insert_raw_row(runtime: Runtime, database_url: str, topic: str, state: bytes) -> int:
    """Append a row as the table's owner would with SQL, not through the library."""
    table = sql.Identifier(runtime.settings.schema, EVENTS_TABLE)
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL(
                "INSERT INTO {} (originator_id, originator_version, topic, state) "
                "VALUES (gen_random_uuid(), 1, %s, %s) RETURNING notification_id"
            ).format(table),
            (topic, state),
        ).fetchone()
    assert row is not None
    return int(row[0])


def projection_positions(runtime: Runtime) -> dict[str, int]:
    query = sql.SQL("SELECT name, position FROM {}").format(
        sql.Identifier(runtime.settings.schema, POSITIONS_TABLE)
    )
    with runtime.store.transaction() as cursor:
        return {row["name"]: row["position"] for row in cursor.execute(query)}


def task_view_state(runtime: Runtime, task_id: UUID) -> str | None:
    query = sql.SQL("SELECT state FROM {} WHERE task_id = %s").format(
        sql.Identifier(runtime.settings.schema, "task_view")
    )
    with runtime.store.transaction() as cursor:
        row = cursor.execute(query, (task_id,)).fetchone()
    return None if row is None else str(row["state"])


def verify(runtime: Runtime, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="ledger")
    add_audit_parser(parser.add_subparsers(dest="command"))
    code = cmd_audit(runtime, parser.parse_args(["audit", "verify", *flags]))
    return code, capsys.readouterr().out


def test_undecodable_rows_are_chained_reported_and_skipped_and_later_events_projected(
    runtime: Runtime,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = runtime.ledger.enqueue(TaskRequest("echo", {"n": 1}))
    unknown_topic = insert_raw_row(runtime, database_url, "nowhere.module:Nothing", b"{}")
    caplog.set_level(logging.WARNING)
    runtime.catch_up()  # the undecodable row is the head: every projection moves past it
    assert set(projection_positions(runtime).values()) == {unknown_topic}

    # A known topic whose state does not parse is undecodable too.
    bad_state = insert_raw_row(runtime, database_url, "domain.task:Task.TaskStarted", b"\xff{")
    after = runtime.ledger.enqueue(TaskRequest("echo", {"n": 2}))
    succeed(runtime.store, after.id)
    runtime.catch_up()

    head = runtime.store.head_position()
    assert set(projection_positions(runtime).values()) == {head}
    assert task_view_state(runtime, before.id) == "ready"
    assert task_view_state(runtime, after.id) == "succeeded"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for position in (unknown_topic, bad_state):
        for name in ("task_view", "readiness", "dataset"):
            assert any(
                f"projection {name}: the event at position {position} does not decode" in m
                and m.endswith("skipped")
                for m in warned
            ), (name, position, warned)
        assert any(
            f"projection audit_chain: the event at position {position} does not decode" in m
            and m.endswith("chained by its stored bytes")
            for m in warned
        )

    caplog.clear()
    code, out = verify(runtime, capsys)
    assert code == 0 and out.startswith("ok: ")
    assert f"2 undecodable (at {unknown_topic}, {bad_state})" in out.replace("\n", " ")
    assert any(f"position {unknown_topic}" in r.getMessage() for r in caplog.records)
    code, out = verify(runtime, capsys, "--json")
    report = json.loads(out)
    assert (code, report["ok"], report["checked"]) == (0, True, head)
    assert report["undecodable"] == [unknown_topic, bad_state]


def test_an_altered_undecodable_row_is_still_reported_at_its_position(
    runtime: Runtime, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime.ledger.enqueue(TaskRequest("echo"))
    position = insert_raw_row(runtime, database_url, "nowhere.module:Nothing", b"{}")
    runtime.catch_up()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # past the append-only guard
        conn.execute(
            sql.SQL("UPDATE {} SET state = %s WHERE notification_id = %s").format(
                sql.Identifier(runtime.settings.schema, EVENTS_TABLE)
            ),
            (b"{ }", position),
        )
    code, out = verify(runtime, capsys, "--json")
    report = json.loads(out)
    assert (code, report["ok"], report["first_bad_position"], report["reason"]) == (
        1,
        False,
        position,
        "altered",
    )


def test_decodable_events_are_not_reported(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    task = runtime.ledger.enqueue(TaskRequest("echo"))
    succeed(runtime.store, task.id)
    code, out = verify(runtime, capsys, "--json")
    assert (code, json.loads(out)["undecodable"]) == (0, [])


class ChainLosingItsDatabase(AuditChain):
    """The audit chain, as if its database connection broke while it caught up."""

    def apply(self, cursor: Any, event: Any, position: int) -> list[Any]:
        raise psycopg.OperationalError("the connection was lost")

    def apply_batch(self, cursor: Any, events: Any) -> list[Any]:
        raise psycopg.OperationalError("the connection was lost")


def test_a_chain_that_cannot_catch_up_fails_verification(runtime: Runtime) -> None:
    runtime.ledger.enqueue(TaskRequest("echo"))
    runtime.catch_up()
    runtime.ledger.enqueue(TaskRequest("echo"))
    failing = ProjectionRunner(runtime.store, ChainLosingItsDatabase(runtime.settings.schema))
    report = verify_chain(runtime.store, failing)
    assert (report.ok, report.reason, report.unchained) == (False, "catch-up-failed", 1)
    assert "could not catch up: OperationalError" in report.detail


def test_the_event_list_passes_over_an_undecodable_row(
    runtime: Runtime, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = runtime.ledger.enqueue(TaskRequest("echo", {"n": 1}))
    bad = insert_raw_row(runtime, database_url, "nowhere.module:Nothing", b"{}")
    after = runtime.ledger.enqueue(TaskRequest("echo", {"n": 2}))
    caplog.set_level(logging.WARNING)

    page = read_events(runtime.store, 0, 100, EventFilter())

    assert [e.event.originator_id for e in page.events] == [before.id, after.id]
    assert page.next_after == page.head > bad
    assert any(f"position {bad} does not decode" in r.getMessage() for r in caplog.records)
