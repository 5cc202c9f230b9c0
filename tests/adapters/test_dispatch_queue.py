"""The dispatch queue moves with the events: a task is claimable the moment its enqueue (or
unblock, or retry) commits, without waiting for any projection."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.postgres.dispatch import PostgresDispatch
from execution_ledger.adapters.postgres.running import ready_channel
from execution_ledger.adapters.postgres.schema import create_schema
from execution_ledger.adapters.runtime import Runtime, all_projections
from execution_ledger.domain.execution import AttemptOutcome, Failure, Success
from execution_ledger.domain.submission import TaskRequest


def dispatch_of(runtime: Runtime) -> PostgresDispatch:
    return PostgresDispatch(runtime.store, runtime.settings.config.registry, clock=utc_now)


def queue_rows(runtime: Runtime) -> dict[UUID, dict[str, Any]]:
    with runtime.store.transaction() as cur:
        cur.execute(
            sql.SQL("SELECT task_id, state, run_at, seq FROM {} ORDER BY seq").format(
                runtime.store.dispatch_queue.table
            )
        )
        return {row["task_id"]: row for row in cur.fetchall()}


def test_a_task_is_claimable_as_soon_as_its_enqueue_commits(runtime: Runtime) -> None:
    task = runtime.ledger.enqueue(TaskRequest("echo", {"x": 1}))
    # No projection has run: the claim reads the dispatch queue, written with the event.
    claimed = dispatch_of(runtime).claim(["default"], 10, "w1")
    assert [c.task_id for c in claimed] == [task.id]
    assert runtime.store.load(task.id).state.value == "running"


def test_the_row_follows_a_task_from_blocked_to_gone(runtime: Runtime) -> None:
    parent, child = runtime.ledger.enqueue_graph(
        [TaskRequest("echo", ref="a"), TaskRequest("echo", ref="b", depends_on=("a",))]
    )
    rows = queue_rows(runtime)
    assert (rows[parent.id]["state"], rows[child.id]["state"]) == ("ready", "blocked")
    dispatch = dispatch_of(runtime)
    assert [c.task_id for c in dispatch.claim(["default"], 10, "w1")] == [parent.id]
    assert queue_rows(runtime)[parent.id]["state"] == "running"
    dispatch.complete([AttemptOutcome(parent.id, 1, Success({"ok": True}))])
    assert parent.id not in queue_rows(runtime)
    runtime.catch_up()  # the cascade appends TaskUnblocked; the row moves with it
    assert queue_rows(runtime)[child.id]["state"] == "ready"
    runtime.ledger.cancel(child.id)
    assert queue_rows(runtime) == {}


def test_a_failed_attempt_with_attempts_left_waits_for_its_retry_time(runtime: Runtime) -> None:
    task = runtime.ledger.enqueue(TaskRequest("echo", max_attempts=3))
    dispatch = dispatch_of(runtime)
    seq = queue_rows(runtime)[task.id]["seq"]
    dispatch.claim(["default"], 10, "w1")
    dispatch.complete([AttemptOutcome(task.id, 1, Failure("Boom", "try again"))])
    row = queue_rows(runtime)[task.id]
    assert row["state"] == "scheduled"
    assert row["run_at"] > datetime.now(UTC)
    assert row["seq"] == seq  # it keeps its place (enqueue order) for its lane
    assert dispatch.claim(["default"], 10, "w1") == []  # not due yet
    assert dispatch.next_due(["default"]) == row["run_at"]


def test_a_task_scheduled_for_later_is_claimed_once_due(runtime: Runtime) -> None:
    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    task = runtime.ledger.enqueue(TaskRequest("echo", run_at=soon))
    dispatch = dispatch_of(runtime)
    assert dispatch.claim(["default"], 10, "w1") == []
    time.sleep((soon - datetime.now(UTC)).total_seconds() + 0.05)
    assert [c.task_id for c in dispatch.claim(["default"], 10, "w1")] == [task.id]


def test_a_save_that_makes_work_ready_wakes_the_listeners(
    runtime: Runtime, database_url: str
) -> None:
    channel = ready_channel(runtime.settings.schema)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        runtime.ledger.enqueue(TaskRequest("echo"))
        notices = list(listener.notifies(timeout=2.0, stop_after=1))
    assert [(n.channel, n.payload) for n in notices] == [(channel, "default")]


def test_another_schemas_saves_do_not_wake_this_ones_workers(
    runtime: Runtime, database_url: str
) -> None:
    other = ready_channel(runtime.settings.schema + "_other")
    assert other != ready_channel(runtime.settings.schema)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(other)))
        runtime.ledger.enqueue(TaskRequest("echo"))
        runtime.ledger.pause_queue("agents")
        notices = list(listener.notifies(timeout=0.5, stop_after=1))
    assert notices == []


def test_resuming_a_queue_wakes_every_worker(runtime: Runtime, database_url: str) -> None:
    runtime.ledger.pause_queue("agents")
    channel = ready_channel(runtime.settings.schema)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        runtime.ledger.resume_queue("agents")
        notices = list(listener.notifies(timeout=2.0, stop_after=1))
    assert [(n.channel, n.payload) for n in notices] == [(channel, "")]  # names no queue


def test_a_worker_sleeps_through_notices_of_queues_it_does_not_serve_or_saw_paused(
    runtime: Runtime,
) -> None:
    node = WorkerNode(runtime, queues=["default"], projections=False)
    runtime.ledger.pause_queue("default")
    node.dispatch.claim(["default"], 10, node.worker_id)  # the claim sees the flag
    woken = []
    for payload in ("default", "agents", "agents,default", ""):
        node.worker.wake.clear()
        node._ready(payload)
        woken.append(node.worker.wake.is_set())
    runtime.ledger.resume_queue("default")
    node.dispatch.claim(["default"], 10, node.worker_id)
    node.worker.wake.clear()
    node._ready("default")
    assert woken == [False, False, False, True]
    assert node.worker.wake.is_set()  # resumed: its notices wake it again


def test_a_schema_without_the_table_gets_it_filled_from_the_readiness_graph(
    runtime: Runtime, database_url: str
) -> None:
    first, second = (runtime.ledger.enqueue(TaskRequest("echo", {"i": i})) for i in range(2))
    done = runtime.ledger.enqueue(TaskRequest("echo"))
    dispatch = dispatch_of(runtime)
    runtime.ledger.cancel(done.id)
    runtime.catch_up()
    with runtime.store.transaction() as cur:  # a schema from before the dispatch queue
        cur.execute(sql.SQL("DROP TABLE {}").format(runtime.store.dispatch_queue.table))
        revision = sql.Identifier(runtime.settings.schema, "ledger_schema_revision")
        cur.execute(sql.SQL("DROP TABLE {}").format(revision))  # (nor a revision marker)
    create_schema(database_url, runtime.settings.schema, all_projections(runtime.settings.schema))
    assert list(queue_rows(runtime)) == [first.id, second.id]
    assert [c.task_id for c in dispatch.claim(["default"], 10, "w1")] == [first.id, second.id]


def test_a_success_unblocks_its_dependents_in_its_own_transaction(runtime: Runtime) -> None:
    a, b, c, d = runtime.ledger.enqueue_graph(
        [
            TaskRequest("echo", ref="a"),
            TaskRequest("echo", ref="b"),
            TaskRequest("echo", ref="c", depends_on=("a",)),
            TaskRequest("echo", ref="d", depends_on=("a", "b")),
        ]
    )
    dispatch = dispatch_of(runtime)
    assert {t.task_id for t in dispatch.claim(["default"], 10, "w1")} == {a.id, b.id}
    # No projection runs here: the round that records a's success unblocks c and starts
    # it; d (still waiting on b) stays blocked until b's success is recorded too.
    done_a = [AttemptOutcome(a.id, 1, Success({}))]
    assert [t.task_id for t in dispatch.claim(["default"], 10, "w1", outcomes=done_a)] == [c.id]
    assert runtime.store.load(c.id).state.value == "running"
    assert runtime.store.load(d.id).state.value == "blocked"
    done_b = [AttemptOutcome(b.id, 1, Success({}))]
    assert [t.task_id for t in dispatch.claim(["default"], 10, "w1", outcomes=done_b)] == [d.id]
    assert queue_rows(runtime)[d.id]["state"] == "running"
    runtime.catch_up()  # the cascade finds nothing left to do: no second TaskUnblocked
    for task in (c, d):
        names = [type(e.event).__name__ for e in runtime.store.history(task.id)]
        assert names.count("TaskUnblocked") == 1


def test_a_failure_leaves_the_dependents_to_the_cascade_which_skips_them(
    runtime: Runtime,
) -> None:
    a, b = runtime.ledger.enqueue_graph(
        [TaskRequest("echo", ref="a"), TaskRequest("echo", ref="b", depends_on=("a",))]
    )
    dispatch = dispatch_of(runtime)
    dispatch.claim(["default"], 10, "w1")
    failed = [AttemptOutcome(a.id, 1, Failure("Boom", "no", retryable=False))]
    dispatch.claim(["default"], 10, "w1", outcomes=failed)
    assert runtime.store.load(b.id).state.value == "blocked"
    runtime.catch_up()
    assert runtime.store.load(b.id).state.value == "skipped"
    assert queue_rows(runtime) == {}


def test_a_round_with_no_free_slot_unblocks_but_does_not_start(runtime: Runtime) -> None:
    a, b = runtime.ledger.enqueue_graph(
        [TaskRequest("echo", ref="a"), TaskRequest("echo", ref="b", depends_on=("a",))]
    )
    dispatch = dispatch_of(runtime)
    dispatch.claim(["default"], 1, "w1")
    done = [AttemptOutcome(a.id, 1, Success({}))]
    assert dispatch.claim(["default"], 0, "w1", outcomes=done) == []
    assert runtime.store.load(b.id).state.value == "ready"
    assert queue_rows(runtime)[b.id]["state"] == "ready"


def test_an_outcome_for_a_task_cancelled_meanwhile_is_dropped_and_the_claim_still_made(
    runtime: Runtime,
) -> None:
    first = runtime.ledger.enqueue(TaskRequest("echo", {"i": 1}))
    dispatch = dispatch_of(runtime)
    dispatch.claim(["default"], 1, "w1")
    runtime.ledger.cancel(first.id)  # written while the worker still holds the attempt
    second = runtime.ledger.enqueue(TaskRequest("echo", {"i": 2}))
    done = [AttemptOutcome(first.id, 1, Success({"late": True}))]
    # The round's save conflicts on the first task's version (at its commit): the outcome
    # is reloaded and dropped, and the claim is made again on its own.
    claimed = dispatch.claim(["default"], 1, "w1", outcomes=done)
    assert [c.task_id for c in claimed] == [second.id]
    cancelled = runtime.store.load(first.id)
    assert (cancelled.state.value, cancelled.result) == ("cancelled", None)


def test_a_freed_dependent_does_not_pass_a_higher_priority_task(runtime: Runtime) -> None:
    a, b = runtime.ledger.enqueue_graph(
        [TaskRequest("echo", ref="a"), TaskRequest("echo", ref="b", depends_on=("a",))]
    )
    dispatch = dispatch_of(runtime)
    dispatch.claim(["default"], 1, "w1")
    urgent = runtime.ledger.enqueue(TaskRequest("echo", priority=5))
    done = [AttemptOutcome(a.id, 1, Success({}))]
    assert [c.task_id for c in dispatch.claim(["default"], 1, "w1", outcomes=done)] == [urgent.id]
    assert runtime.store.load(b.id).state.value == "ready"  # unblocked, waiting its turn
    assert [c.task_id for c in dispatch.claim(["default"], 1, "w1")] == [b.id]


def test_a_freed_dependent_in_a_lane_keeps_to_the_lanes_limit(runtime: Runtime) -> None:
    a, b, c = runtime.ledger.enqueue_graph(
        [
            TaskRequest("echo", ref="a"),
            TaskRequest("echo", ref="b", depends_on=("a",), lane="agent-1"),
            TaskRequest("echo", ref="c", depends_on=("a",), lane="agent-2"),
        ]
    )
    dispatch = dispatch_of(runtime)
    dispatch.claim(["default"], 10, "w1")
    busy = runtime.ledger.enqueue(TaskRequest("echo", lane="agent-1"))
    assert [t.task_id for t in dispatch.claim(["default"], 10, "w1")] == [busy.id]
    done = [AttemptOutcome(a.id, 1, Success({}))]
    # agent-1 is busy: b waits, unblocked; agent-2 is free: c starts in the same round.
    assert [t.task_id for t in dispatch.claim(["default"], 10, "w1", outcomes=done)] == [c.id]
    assert runtime.store.load(b.id).state.value == "ready"


def test_tasks_of_one_bulk_enqueue_are_claimed_in_the_order_submitted(runtime: Runtime) -> None:
    tasks = runtime.ledger.enqueue_graph([TaskRequest("echo", {"i": i}) for i in range(9)])
    assert list(queue_rows(runtime)) == [task.id for task in tasks]  # seq is enqueue order
    dispatch = dispatch_of(runtime)  # the default queue runs 10 at once: three rounds of 3
    claimed = [c.task_id for _ in range(3) for c in dispatch.claim(["default"], 3, "w1")]
    assert claimed == [task.id for task in tasks]


def test_the_round_that_records_an_attempts_end_takes_the_lane_slot_it_frees(
    runtime: Runtime,
) -> None:
    first = runtime.ledger.enqueue(TaskRequest("echo", lane="agent-1"))
    second = runtime.ledger.enqueue(TaskRequest("echo", lane="agent-1"))
    dispatch = dispatch_of(runtime)
    assert [t.task_id for t in dispatch.claim(["default"], 10, "w1")] == [first.id]
    assert dispatch.claim(["default"], 10, "w1") == []  # the lane runs one at a time
    done = [AttemptOutcome(first.id, 1, Success({}))]
    # Not a round later: the same round that ends the first starts the second.
    assert [t.task_id for t in dispatch.claim(["default"], 10, "w1", outcomes=done)] == [
        second.id
    ]
    assert runtime.store.load(first.id).state.value == "succeeded"


def test_a_round_names_its_worker_as_the_sender_of_the_slots_it_freed(
    runtime: Runtime, database_url: str
) -> None:
    task = runtime.ledger.enqueue(TaskRequest("echo"))
    dispatch = dispatch_of(runtime)
    dispatch.claim(["default"], 10, "w1")
    channel = ready_channel(runtime.settings.schema)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        done = [AttemptOutcome(task.id, 1, Success({}))]
        dispatch.claim(["default"], 10, "w1", outcomes=done)
        notices = list(listener.notifies(timeout=2.0, stop_after=1))
    assert [n.payload for n in notices] == ["|w1|default"]


def test_a_worker_wakes_for_slots_freed_by_other_workers_but_not_by_its_own_rounds(
    runtime: Runtime,
) -> None:
    node = WorkerNode(runtime, queues=["default"], projections=False)
    woken = []
    for payload in (
        f"|{node.worker_id}|default",  # its own round freed the slot, and took it
        "|another-worker|default",
        f"default|{node.worker_id}|agents",  # new work in default, from its own round
        f"agents|{node.worker_id}|default",
    ):
        node.worker.wake.clear()
        node._ready(payload)
        woken.append(node.worker.wake.is_set())
    assert woken == [False, True, True, False]


def _notices_of_round(
    runtime: Runtime, database_url: str, dispatch: PostgresDispatch, done: list[AttemptOutcome]
) -> list[str]:
    """The ready notices sent while ``dispatch`` records ``done`` in a round of "w1"."""
    channel = ready_channel(runtime.settings.schema)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        dispatch.claim(["default"], 10, "w1", outcomes=done)
        return [n.payload for n in listener.notifies(timeout=0.5, stop_after=1)]


def test_a_slot_freed_where_no_claims_can_reach_the_queues_limit_wakes_no_other_node(
    runtime: Runtime, database_url: str
) -> None:
    """"default" allows 10 at once and the only node seen has 4 slots: another node could
    start nothing more for the slot this round frees, so it is not woken for it."""
    task = runtime.ledger.enqueue(TaskRequest("echo"))
    dispatch = dispatch_of(runtime)
    dispatch.register_worker("w1", "host", 1, ["default"], 4)
    assert [a.task_id for a in dispatch.claim(["default"], 4, "w1")] == [task.id]
    done = [AttemptOutcome(task.id, 1, Success({}))]
    assert _notices_of_round(runtime, database_url, dispatch, done) == []
    assert runtime.store.load(task.id).state.value == "succeeded"


def test_a_slot_freed_where_the_nodes_can_reach_the_limit_wakes_the_others(
    runtime: Runtime, database_url: str
) -> None:
    """Nodes of 8 slots and 6 slots can start more than "default"'s 10 at once: a slot
    freed by one may be the one another is waiting for."""
    task = runtime.ledger.enqueue(TaskRequest("echo"))
    dispatch = dispatch_of(runtime)
    dispatch.register_worker("w1", "host", 1, ["default"], 8)
    dispatch.register_worker("w2", "host", 2, ["default"], 6)
    assert [a.task_id for a in dispatch.claim(["default"], 8, "w1")] == [task.id]
    done = [AttemptOutcome(task.id, 1, Success({}))]
    assert _notices_of_round(runtime, database_url, dispatch, done) == ["|w1|default"]


def test_a_lanes_slot_freed_wakes_the_others_even_where_the_queue_is_out_of_reach(
    runtime: Runtime, database_url: str
) -> None:
    """The lane's next task becomes claimable when its running one ends, whatever the
    queue's limit: another node must hear of it."""
    first = runtime.ledger.enqueue(TaskRequest("echo", lane="agent-1"))
    runtime.ledger.enqueue(TaskRequest("echo", lane="agent-1"))
    dispatch = dispatch_of(runtime)
    dispatch.register_worker("w1", "host", 1, ["default"], 4)
    assert [a.task_id for a in dispatch.claim(["default"], 4, "w1")] == [first.id]
    done = [AttemptOutcome(first.id, 1, Success({}))]
    # limit 0: the round records the end and starts nothing, so the lane's next task
    # waits for whichever node hears first.
    channel = ready_channel(runtime.settings.schema)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        dispatch.claim(["default"], 0, "w1", outcomes=done)
        notices = [n.payload for n in listener.notifies(timeout=2.0, stop_after=1)]
    assert notices == ["|w1|default"]
