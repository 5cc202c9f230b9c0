"""A graph's singleton keys are taken in one statement with its tasks: every key lands on
its own task, and a key that another enqueue takes between the look and the save fails the
whole graph with nothing stored."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import IntegrityError

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from tests.adapters.test_singletons import key_rows


def dispatch_rows(runtime: Runtime) -> int:
    with runtime.store.transaction() as cursor:
        row = cursor.execute(
            f'SELECT count(*) AS n FROM "{runtime.store.schema}".dispatch_queue'
        ).fetchone()
    assert row is not None
    return int(row["n"])


def test_every_key_of_a_graph_is_taken_by_its_own_task(runtime: Runtime) -> None:
    tasks = runtime.ledger.enqueue_graph(
        [
            TaskRequest("echo", {"n": 1}, ref="a", singleton="k1"),
            TaskRequest("echo", {"n": 2}, ref="b"),
            TaskRequest("echo", {"n": 3}, ref="c", singleton="k'2\"", depends_on=("a",)),
            TaskRequest("echo", {"n": 4}, ref="d", singleton="k3"),
        ]
    )
    by_ref = {t.ref: t for t in tasks}
    assert key_rows(runtime) == [
        ("echo", "k'2\"", by_ref["c"].id),
        ("echo", "k1", by_ref["a"].id),
        ("echo", "k3", by_ref["d"].id),
    ]
    holder, created = runtime.ledger.enqueue_once(TaskRequest("echo", singleton="k'2\""))
    assert (holder.id, created) == (by_ref["c"].id, False)


def test_a_key_taken_after_the_look_fails_the_whole_graph(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = runtime.ledger.enqueue(TaskRequest("echo", singleton="taken"))
    head, rows = runtime.store.head_position(), dispatch_rows(runtime)
    # The look finds no holder, as when another enqueue commits the key just after it.
    monkeypatch.setattr(runtime.ledger.coalescing, "_holders", lambda *_: {})
    with pytest.raises(IntegrityError):
        runtime.ledger.enqueue_graph(
            [
                TaskRequest("echo", ref="a", singleton="free"),
                TaskRequest("echo", ref="b", singleton="taken"),
            ]
        )
    assert runtime.store.head_position() == head
    assert dispatch_rows(runtime) == rows
    assert key_rows(runtime) == [("echo", "taken", holder.id)]
