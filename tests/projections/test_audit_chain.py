"""The audit chain follows the log: one row per stored event, each hash linked to the one
before, identical after a rebuild or a restart."""

from __future__ import annotations

import hashlib
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent
from psycopg import sql

from execution_ledger.adapters.postgres.event_store import EVENTS_TABLE
from execution_ledger.adapters.postgres.projection_runner import ProjectionRunner
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.projections.audit_chain import (
    GENESIS,
    AuditChain,
    canonical_bytes,
    event_hash,
    next_chain_hash,
)
from tests.helpers import fail, succeed


@pytest.fixture
def chain(runtime: Runtime) -> ProjectionRunner:
    projection = AuditChain(runtime.settings.schema)
    with runtime.store.transaction() as cursor:
        projection.create(cursor)
    runner = ProjectionRunner(runtime.store, projection)
    runtime.runners[projection.name] = runner
    return runner


def rows(runtime: Runtime, table: str, order: str) -> list[dict[str, object]]:
    with runtime.store.transaction() as cursor:
        query = sql.SQL("SELECT * FROM {} ORDER BY {}").format(
            sql.Identifier(runtime.settings.schema, table), sql.Identifier(order)
        )
        return cursor.execute(query).fetchall()


def expected_chain(runtime: Runtime) -> list[tuple[int, bytes, bytes]]:
    """(position, event hash, chain hash) recomputed in Python from the stored rows."""
    previous = GENESIS
    expected = []
    for row in rows(runtime, EVENTS_TABLE, "notification_id"):
        canonical = canonical_bytes(
            row["notification_id"],
            row["originator_id"],
            row["originator_version"],
            row["topic"],
            bytes(row["state"]),
        )
        previous = next_chain_hash(previous, canonical)
        expected.append((row["notification_id"], event_hash(canonical), previous))
    return expected


def chained(runtime: Runtime) -> list[tuple[int, bytes, bytes]]:
    return [
        (r["position"], bytes(r["event_hash"]), bytes(r["chain_hash"]))
        for r in rows(runtime, "audit_chain", "position")
    ]


def test_the_projection_reads_the_library_events_table() -> None:
    assert AuditChain("s")._append.count(f'"s"."{EVENTS_TABLE}"') == 1


def test_the_chain_grows_with_the_log_and_links_each_event_to_the_one_before(
    runtime: Runtime, chain: ProjectionRunner
) -> None:
    good = runtime.ledger.enqueue(TaskRequest("add", {"a": 1, "b": 2}))
    bad = runtime.ledger.enqueue(TaskRequest("fail"))
    succeed(runtime.store, good.id, {"sum": 3})
    chain.catch_up()
    first = chained(runtime)
    assert len(first) == len(rows(runtime, EVENTS_TABLE, "notification_id")) >= 4
    assert first == expected_chain(runtime)

    fail(runtime.store, bad.id, retry=True)
    runtime.ledger.cancel(bad.id, by="ada")
    chain.catch_up()
    second = chained(runtime)
    assert second[: len(first)] == first  # earlier links never change
    assert len(second) > len(first)
    assert second == expected_chain(runtime)
    assert chain.position() == runtime.store.head_position()


def test_a_rebuild_gives_the_identical_chain(runtime: Runtime, chain: ProjectionRunner) -> None:
    for n in range(5):
        task = runtime.ledger.enqueue(TaskRequest("echo", {"n": n}))
        succeed(runtime.store, task.id)
    chain.catch_up()
    before = rows(runtime, "audit_chain", "position")
    assert chain.rebuild() == len(before)
    assert rows(runtime, "audit_chain", "position") == before


def test_a_restarted_or_second_runner_continues_the_same_chain(
    runtime: Runtime, chain: ProjectionRunner
) -> None:
    runtime.ledger.enqueue(TaskRequest("echo"))
    chain.catch_up()
    runtime.ledger.enqueue(TaskRequest("echo"))
    # A new process: nothing in memory, it reads the previous link from the table.
    ProjectionRunner(runtime.store, AuditChain(runtime.settings.schema)).catch_up()
    runtime.ledger.enqueue(TaskRequest("echo"))
    chain.catch_up()  # the first runner again, after the other one moved on
    assert chained(runtime) == expected_chain(runtime)


def test_applying_an_event_twice_changes_nothing(runtime: Runtime, chain: ProjectionRunner) -> None:
    runtime.ledger.enqueue(TaskRequest("echo"))
    runtime.ledger.enqueue(TaskRequest("echo"))
    chain.catch_up()
    before = chained(runtime)
    events = runtime.store.read(0, 10)
    with runtime.store.transaction() as cursor:
        for recorded in events:
            chain.projection.apply(cursor, recorded.event, recorded.position)
    assert chained(runtime) == before


# -- known answers: the chain against the byte layout of docs/audit.md, computed here --------

KAT_ID = UUID("00112233-4455-6677-8899-aabbccddeeff")
KAT_TOPICS = (b"domain.queue:Queue.QueueRegistered", b"domain.queue:Queue.QueuePaused")
KAT_STATES = (
    '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-01-01T00:00:00+00:00"},'
    '"originator_topic":"domain.queue:Queue","name":"kät ✓"}'.encode(),  # 130 chars, 134 bytes
    b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-01-01T00:00:01+00:00"},"by":"auditor"}',
)
# canonical(n) of docs/audit.md, written out: int8 position, the id's 16 bytes, int8 version,
# int4 length of the topic and its UTF-8 bytes, int4 length of the state and its bytes.
KAT_CANONICAL = (
    b"\x00\x00\x00\x00\x00\x00\x00\x01"
    + b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff"
    + b"\x00\x00\x00\x00\x00\x00\x00\x01"
    + b"\x00\x00\x00\x22"
    + KAT_TOPICS[0]
    + b"\x00\x00\x00\x86"
    + KAT_STATES[0],
    b"\x00\x00\x00\x00\x00\x00\x00\x02"
    + b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff"
    + b"\x00\x00\x00\x00\x00\x00\x00\x02"
    + b"\x00\x00\x00\x1e"
    + KAT_TOPICS[1]
    + b"\x00\x00\x00\x5b"
    + KAT_STATES[1],
)


def test_the_chain_of_fixed_events_matches_hashes_computed_from_the_documented_layout(
    runtime: Runtime, chain: ProjectionRunner
) -> None:
    stored = [
        StoredEvent(KAT_ID, version, topic.decode(), state)
        for version, topic, state in zip((1, 2), KAT_TOPICS, KAT_STATES, strict=True)
    ]
    assert runtime.store.recorder.insert_events(stored) == [1, 2]  # a fresh log: positions 1, 2
    chain.catch_up()

    first_link = hashlib.sha256(bytes(32) + KAT_CANONICAL[0]).digest()
    second_link = hashlib.sha256(first_link + KAT_CANONICAL[1]).digest()
    assert chained(runtime) == [
        (1, hashlib.sha256(KAT_CANONICAL[0]).digest(), first_link),
        (2, hashlib.sha256(KAT_CANONICAL[1]).digest(), second_link),
    ]
    assert first_link.hex() == (  # the literal bytes above, hashed once by hand
        "7ef5d91c15b1718d9a2e087a8abec6f9d8013ceaeec6623b24a966ae9f413d9f"
    )


# -- a batch in one statement: the same rows as the events applied one by one ---------------


def truncate_chain(runtime: Runtime) -> None:
    with runtime.store.transaction() as cursor:
        cursor.execute(
            sql.SQL("TRUNCATE {}").format(sql.Identifier(runtime.settings.schema, "audit_chain"))
        )


def apply_one_by_one(runtime: Runtime, projection: AuditChain, until: int | None = None) -> None:
    with runtime.store.transaction() as cursor:
        for recorded in runtime.store.read(0, 1000, until):
            projection.apply(cursor, recorded.event, recorded.position)


def apply_as_one_batch(runtime: Runtime, projection: AuditChain) -> None:
    batch = [(r.event, r.position) for r in runtime.store.read(0, 1000)]
    with runtime.store.transaction() as cursor:
        projection.apply_batch(cursor, batch)


def some_history(runtime: Runtime) -> None:
    for n in range(4):
        task = runtime.ledger.enqueue(TaskRequest("echo", {"n": n}))
        succeed(runtime.store, task.id, {"n": n})
    fail(runtime.store, runtime.ledger.enqueue(TaskRequest("fail")).id)


def test_a_batch_gives_the_same_hashes_as_its_events_applied_one_by_one(
    runtime: Runtime, chain: ProjectionRunner
) -> None:
    some_history(runtime)
    projection = chain.projection
    assert isinstance(projection, AuditChain)
    apply_one_by_one(runtime, projection)
    one_by_one = chained(runtime)
    assert len(one_by_one) >= 13 and one_by_one == expected_chain(runtime)

    truncate_chain(runtime)
    apply_as_one_batch(runtime, projection)
    assert chained(runtime) == one_by_one

    apply_as_one_batch(runtime, projection)  # again: nothing changes
    assert chained(runtime) == one_by_one


def test_a_batch_over_events_partly_chained_keeps_their_rows_and_continues_from_them(
    runtime: Runtime, chain: ProjectionRunner
) -> None:
    some_history(runtime)
    projection = chain.projection
    assert isinstance(projection, AuditChain)
    apply_one_by_one(runtime, projection, until=5)
    assert [position for position, _, _ in chained(runtime)] == [1, 2, 3, 4, 5]
    apply_as_one_batch(runtime, projection)  # positions 1..5 again, then the rest
    assert chained(runtime) == expected_chain(runtime)


def first_five_chained(
    runtime: Runtime, chain: ProjectionRunner
) -> tuple[AuditChain, list[tuple[Any, int]]]:
    """``some_history`` with its first five events chained one by one; the projection and
    every ``(event, position)`` of the log."""
    some_history(runtime)
    projection = chain.projection
    assert isinstance(projection, AuditChain)
    events = [(r.event, r.position) for r in runtime.store.read(0, 1000)]
    apply_one_by_one(runtime, projection, until=5)
    return projection, events


def test_a_batch_after_the_chained_rows_continues_from_the_last_of_them(
    runtime: Runtime, chain: ProjectionRunner
) -> None:
    # The live case: nothing chained inside the batch's range, the chain's last row below it.
    projection, events = first_five_chained(runtime, chain)
    for batch in (events[5:9], events[9:]):
        with runtime.store.transaction() as cursor:
            projection.apply_batch(cursor, batch)
    assert chained(runtime) == expected_chain(runtime)


def test_a_batch_chains_from_the_last_row_before_each_event_even_one_outside_the_batch(
    runtime: Runtime, chain: ProjectionRunner
) -> None:
    # Positions 2 (chained) and 6.. (new), while 3..5 are chained but not in the batch:
    # position 6 chains from the row at 5, as one by one.
    projection, events = first_five_chained(runtime, chain)
    with runtime.store.transaction() as cursor:
        projection.apply_batch(cursor, [events[1], *events[5:]])
    assert chained(runtime) == expected_chain(runtime)


def test_a_batch_follows_the_archive_head_as_one_by_one_does(
    runtime: Runtime, chain: ProjectionRunner
) -> None:
    some_history(runtime)
    projection = chain.projection
    assert isinstance(projection, AuditChain)
    full = expected_chain(runtime)
    head_position, _, head_hash = full[5]
    with runtime.store.transaction() as cursor:
        cursor.execute(
            sql.SQL(
                "INSERT INTO {} (position, chain_hash, archived_at) VALUES (%s, %s, now())"
            ).format(sql.Identifier(runtime.settings.schema, "audit_archive_head")),
            (head_position, head_hash),
        )
    apply_one_by_one(runtime, projection)
    one_by_one = chained(runtime)
    assert one_by_one == full[6:]  # nothing at or below the head; the rest chains from it

    truncate_chain(runtime)
    apply_as_one_batch(runtime, projection)
    assert chained(runtime) == one_by_one


class RecordingCursor:
    """A real cursor that keeps the text of the statements sent through it."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor
        self.statements: list[str] = []

    def execute(self, query: Any, params: Any = None) -> Any:
        self.statements.append(str(query))
        return self.cursor.execute(query, params)


def test_a_batch_is_chained_with_one_statement(runtime: Runtime, chain: ProjectionRunner) -> None:
    some_history(runtime)
    projection = chain.projection
    assert isinstance(projection, AuditChain)
    batch = [(r.event, r.position) for r in runtime.store.read(0, 1000)]
    with runtime.store.transaction() as cursor:
        recording = RecordingCursor(cursor)
        assert projection.apply_batch(recording, batch) == []
    assert len(recording.statements) == 1 and "audit_chain_append" in recording.statements[0]
    assert chained(runtime) == expected_chain(runtime)
