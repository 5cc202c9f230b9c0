"""``one_trip.pipelined``: BEGIN, the statements and COMMIT in one pipeline — all or nothing,
the session left outside any transaction whatever happened, on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.pq import TransactionStatus

from execution_ledger.adapters.postgres.one_trip import batched, pipelined


@pytest.fixture
def conn(database_url: str, schema: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        connection.execute(
            sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(sql.Identifier(schema, "t"))
        )
        yield connection


def ids(conn: psycopg.Connection, schema: str) -> list[int]:
    table = sql.Identifier(schema, "t")
    return [r[0] for r in conn.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(table))]


def insert(schema: str) -> sql.Composed:
    return sql.SQL("INSERT INTO {} VALUES (%s)").format(sql.Identifier(schema, "t"))


def test_the_statements_commit_together(conn: psycopg.Connection, schema: str) -> None:
    with pipelined(conn) as cursor:
        cursor.execute(insert(schema), (1,))
        cursor.execute(insert(schema), (2,))
        returned = cursor.execute(sql.SQL("SELECT 40 + 2 AS n")).fetchone()
    assert returned == {"n": 42}
    assert ids(conn, schema) == [1, 2]
    assert conn.info.transaction_status is TransactionStatus.IDLE


def test_a_refused_statement_commits_nothing_and_raises(
    conn: psycopg.Connection, schema: str
) -> None:
    with pytest.raises(errors.UniqueViolation), pipelined(conn) as cursor:
        cursor.execute(insert(schema), (1,))
        cursor.execute(insert(schema), (1,))
        cursor.execute(insert(schema), (3,))
    assert conn.info.transaction_status is TransactionStatus.IDLE
    assert ids(conn, schema) == []  # the first insert went back with the rest


def test_a_body_that_raises_commits_nothing(conn: psycopg.Connection, schema: str) -> None:
    with pytest.raises(RuntimeError, match="changed its mind"), pipelined(conn) as cursor:
        cursor.execute(insert(schema), (1,))
        raise RuntimeError("changed its mind")
    assert conn.info.transaction_status is TransactionStatus.IDLE
    assert ids(conn, schema) == []


def test_batched_reads_inside_a_pipelined_transaction_see_its_own_writes(
    conn: psycopg.Connection, schema: str
) -> None:
    with pipelined(conn) as cursor:
        cursor.execute(insert(schema), (7,))
        with batched(conn):
            counted = conn.cursor().execute(
                sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(schema, "t"))
            )
        assert counted.fetchone() == (1,)
    assert ids(conn, schema) == [7]


def test_batched_alone_runs_its_statements_in_a_pipeline_of_its_own(
    conn: psycopg.Connection, schema: str
) -> None:
    with batched(conn):
        conn.execute(insert(schema), (1,))
        conn.execute(insert(schema), (2,))
    assert conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
    assert ids(conn, schema) == [1, 2]


def test_statements_prepared_in_an_aborted_pipeline_are_forgotten(
    conn: psycopg.Connection, schema: str
) -> None:
    """psycopg prepares a statement it has run five times; a PREPARE that travelled behind
    a refused statement was skipped by the server, so it must not be used later."""
    conn.execute(insert(schema), (0,))
    outcomes = []
    for n in range(1, 30):
        try:
            with pipelined(conn) as cursor:
                cursor.execute(insert(schema), (0 if n % 3 == 0 else n,))  # every third: taken
                cursor.execute(sql.SQL("SELECT %s::int + 1"), (n,))
            outcomes.append("ok")
        except errors.UniqueViolation:
            outcomes.append("taken")
    assert outcomes.count("taken") == 9 and outcomes.count("ok") == 20
    assert len(ids(conn, schema)) == 21
