"""Enqueueing inside the caller's own transaction: the task exists iff the caller commits."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import InvalidSubmission, TaskNotFound
from execution_ledger.domain.submission import TaskRequest


def test_a_task_enqueued_in_a_committed_transaction_exists_with_the_callers_rows(
    runtime: Runtime,
) -> None:
    orders = sql.Identifier(runtime.settings.schema, "orders")
    with psycopg.connect(runtime.database_url) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(orders))
        conn.commit()
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(orders))
        [task] = runtime.ledger.enqueue_in(conn, [TaskRequest("echo", {"order": 1})])
        conn.commit()
    assert runtime.store.load(task.id).args == {"order": 1}


def test_a_rolled_back_transaction_leaves_no_task(runtime: Runtime) -> None:
    head = runtime.store.head_position()
    with psycopg.connect(runtime.database_url) as conn:
        conn.execute("SELECT 1")
        [task] = runtime.ledger.enqueue_in(conn, [TaskRequest("echo")])
        conn.rollback()
    with pytest.raises(TaskNotFound):
        runtime.store.load(task.id)
    assert runtime.store.head_position() == head


def test_a_connection_outside_a_transaction_is_refused(runtime: Runtime) -> None:
    with (
        psycopg.connect(runtime.database_url, autocommit=True) as conn,
        pytest.raises(InvalidSubmission, match="open transaction"),
    ):
        runtime.ledger.enqueue_in(conn, [TaskRequest("echo")])
