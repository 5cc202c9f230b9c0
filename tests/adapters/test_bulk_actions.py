"""Bulk actions through the ``Ledger`` on a real PostgreSQL: what a dry run counts, what each
action records (one event per task, naming the principal and the bulk action), bounded
batches, tasks that moved on between the count and the change, and what the claim sees
after a re-prioritise or a move."""

from __future__ import annotations

from uuid import UUID

import pytest

from execution_ledger.adapters.bulk_actions import BulkActions, plan_bulk
from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.postgres.dispatch import PostgresDispatch
from execution_ledger.adapters.postgres.task_queries import TaskFilter, get_task_row
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.bulk import BulkAction
from execution_ledger.domain.errors import InvalidQuery, InvalidTransition
from execution_ledger.domain.submission import Requester, TaskRequest
from execution_ledger.domain.task import TaskState
from tests.helpers import fail, start, succeed

OPERATOR = Requester(principal="olga", role="admin")


def enqueue(runtime: Runtime, count: int, **fields: object) -> list[UUID]:
    return [
        runtime.ledger.enqueue(TaskRequest("echo", {"n": n}, **fields)).id  # type: ignore[arg-type]
        for n in range(count)
    ]


def request(runtime: Runtime, action: str, **filters: object) -> object:
    options = {k: filters.pop(k) for k in ("priority", "queue_to", "reason") if k in filters}
    return plan_bulk(
        runtime.settings.config.registry,
        action,
        TaskFilter(**filters),  # type: ignore[arg-type]
        priority=options.get("priority"),  # type: ignore[arg-type]
        queue=options.get("queue_to"),  # type: ignore[arg-type]
        reason=options.get("reason", ""),  # type: ignore[arg-type]
    )


def run(runtime: Runtime, action: str, **filters: object) -> BulkAction:
    bulk = runtime.ledger.bulk_request(request(runtime, action, **filters), OPERATOR)  # type: ignore[arg-type]
    return runtime.ledger.bulk_run(bulk.id)


def kinds_of(runtime: Runtime, task_id: UUID) -> list[str]:
    return [type(e.event).__name__ for e in runtime.ledger.history(task_id)]


def test_a_dry_run_counts_and_samples_the_matches_and_writes_nothing(runtime: Runtime) -> None:
    tagged = enqueue(runtime, 3, tags=("nightly",))
    enqueue(runtime, 2)
    runtime.catch_up()
    head = runtime.store.head_position()
    preview = runtime.ledger.bulk_preview(request(runtime, "cancel", tag="nightly"))  # type: ignore[arg-type]
    assert preview.matched == 3
    assert preview.sample == tagged  # enqueue order
    assert runtime.store.head_position() == head
    assert all(runtime.ledger.task(t).state is TaskState.READY for t in tagged)


def test_a_bulk_cancel_records_each_cancel_with_its_principal_and_the_bulk_id(
    runtime: Runtime,
) -> None:
    tagged = enqueue(runtime, 3, tags=("nightly",))
    other = enqueue(runtime, 1)
    started = tagged[0]
    start(runtime.store, started)  # a running task is cancelled too (its attempt stops)
    runtime.catch_up()
    bulk = run(runtime, "cancel", tag="nightly", reason="bad deploy")
    assert (bulk.state, bulk.matched, bulk.changed, bulk.skipped) == ("completed", 3, 3, 0)
    for task_id in tagged:
        cancelled = runtime.ledger.history(task_id)[-1].event
        assert type(cancelled).__name__ == "TaskCancelled"
        assert (cancelled.by, cancelled.bulk_id, cancelled.reason) == (  # type: ignore[attr-defined]
            "olga",
            bulk.id,
            "bad deploy",
        )
    assert runtime.ledger.task(other[0]).state is TaskState.READY
    stored = runtime.ledger.bulk_action(bulk.id)
    assert (stored.principal, stored.action, stored.task_filter) == (
        "olga",
        "cancel",
        {"tag": "nightly"},
    )


def test_a_bulk_retry_schedules_every_failed_match_again(runtime: Runtime) -> None:
    failed = enqueue(runtime, 2)
    for task_id in failed:
        fail(runtime.store, task_id)
    succeeded = enqueue(runtime, 1)[0]
    succeed(runtime.store, succeeded)
    runtime.catch_up()
    bulk = run(runtime, "retry", state="failed")
    assert (bulk.changed, bulk.skipped) == (2, 0)
    for task_id in failed:
        retried = runtime.ledger.history(task_id)[-1].event
        assert type(retried).__name__ == "TaskRetryScheduled"
        assert (retried.by, retried.bulk_id, retried.manual) == ("olga", bulk.id, True)  # type: ignore[attr-defined]
    assert runtime.ledger.task(succeeded).state is TaskState.SUCCEEDED


def test_the_claim_takes_reprioritised_tasks_first(runtime: Runtime) -> None:
    plain = enqueue(runtime, 3)
    urgent = enqueue(runtime, 2, tags=("urgent",))
    runtime.catch_up()
    bulk = run(runtime, "reprioritise", tag="urgent", priority=500)
    assert (bulk.changed, bulk.skipped) == (2, 0)
    event = runtime.ledger.history(urgent[0])[-1].event
    assert type(event).__name__ == "TaskReprioritised"
    assert (event.priority, event.by, event.bulk_id) == (500, "olga", bulk.id)  # type: ignore[attr-defined]
    dispatch = PostgresDispatch(runtime.store, runtime.settings.config.registry, clock=utc_now)
    claimed = dispatch.claim(["default"], 2, "w1")
    assert {c.task_id for c in claimed} == set(urgent)
    runtime.catch_up()
    assert get_task_row(runtime.store, urgent[1])["priority"] == 500
    assert get_task_row(runtime.store, plain[0])["priority"] == 0


def test_the_claim_finds_moved_tasks_in_their_new_queue(runtime: Runtime) -> None:
    moved = enqueue(runtime, 2, tags=("agentic",))
    stays = enqueue(runtime, 1)
    runtime.catch_up()
    bulk = run(runtime, "move", tag="agentic", queue_to="agents")
    assert (bulk.changed, bulk.skipped) == (2, 0)
    dispatch = PostgresDispatch(runtime.store, runtime.settings.config.registry, clock=utc_now)
    assert [c.task_id for c in dispatch.claim(["default"], 10, "w1")] == stays
    claimed = dispatch.claim(["agents"], 10, "w1")
    assert {c.task_id for c in claimed} == set(moved)
    assert {c.queue for c in claimed} == {"agents"}
    runtime.catch_up()
    assert get_task_row(runtime.store, moved[0])["queue"] == "agents"


def test_a_task_that_moved_on_between_the_count_and_the_change_is_skipped(
    runtime: Runtime,
) -> None:
    tasks = enqueue(runtime, 3, tags=("t",))
    runtime.catch_up()
    bulk = runtime.ledger.bulk_request(request(runtime, "cancel", tag="t"), OPERATOR)  # type: ignore[arg-type]
    assert bulk.matched == 3
    succeed(runtime.store, tasks[1])  # ends after the count; the task view has not seen it
    done = runtime.ledger.bulk_run(bulk.id)
    assert (done.state, done.changed, done.skipped) == ("completed", 2, 1)
    assert runtime.ledger.task(tasks[1]).state is TaskState.SUCCEEDED
    assert kinds_of(runtime, tasks[1])[-1] == "TaskSucceeded"


def test_a_reprioritise_to_the_priority_a_task_has_is_skipped(runtime: Runtime) -> None:
    enqueue(runtime, 2, tags=("t",), priority=7)
    runtime.catch_up()
    bulk = run(runtime, "reprioritise", tag="t", priority=7)
    assert (bulk.changed, bulk.skipped) == (0, 2)


def test_a_long_action_changes_its_matches_in_bounded_batches(runtime: Runtime) -> None:
    tasks = enqueue(runtime, 7, tags=("many",))
    runtime.catch_up()
    ledger = runtime.ledger
    bulk = ledger.bulk_request(request(runtime, "cancel", tag="many"), OPERATOR)  # type: ignore[arg-type]
    seen: list[tuple[int, int]] = []
    actions = BulkActions(ledger.store, ledger.registry, ledger.clock, ledger.running, 3)
    done = actions.run(bulk.id, progress=lambda a: seen.append((a.changed, a.skipped)))
    assert done.changed == 7
    assert seen == [(3, 0), (6, 0), (7, 0), (7, 0)]  # three batches, then the end
    # Each batch is one transaction: the cancels of one batch share a transaction id.
    with runtime.store.transaction() as cur:
        rows = cur.execute(
            f"SELECT count(DISTINCT xmin::text) AS n FROM {runtime.store.schema}.ledger_events "
            "WHERE topic LIKE %s",
            ("%TaskCancelled",),
        ).fetchone()
    assert rows is not None and rows["n"] == 3
    assert all(ledger.task(t).state is TaskState.CANCELLED for t in tasks)
    kinds = [type(e.event).__name__ for e in ledger.store.read(0, 1000)]
    assert kinds.count("BulkActionProgressed") == 3
    assert kinds[-1] == "BulkActionCompleted"


@pytest.mark.parametrize(
    ("action", "filters", "message"),
    [
        ("cancel", {}, "name at least one filter"),
        ("purge", {"state": "ready"}, "unknown bulk action 'purge'"),
        ("retry", {"state": "ready"}, "retry acts on tasks that are failed, cancelled, skipped"),
        ("reprioritise", {"state": "ready", "priority": 1001}, "between -1000 and 1000"),
        ("reprioritise", {"state": "ready"}, "a priority is given with reprioritise"),
        ("move", {"state": "ready", "queue_to": "nowhere"}, "unknown queue 'nowhere'"),
        ("cancel", {"state": "ready", "priority": 3}, "a priority is given with reprioritise"),
    ],
)
def test_a_bad_request_is_refused_before_anything_is_written(
    runtime: Runtime, action: str, filters: dict[str, object], message: str
) -> None:
    enqueue(runtime, 1)
    head = runtime.store.head_position()
    with pytest.raises(InvalidQuery, match=message):
        request(runtime, action, **filters)
    assert runtime.store.head_position() == head


def test_a_batch_that_meets_a_concurrent_write_is_done_again_task_by_task(
    runtime: Runtime,
) -> None:
    tasks = enqueue(runtime, 3, tags=("t",))
    runtime.catch_up()
    bulk = runtime.ledger.bulk_request(
        request(runtime, "reprioritise", tag="t", priority=9),  # type: ignore[arg-type]
        OPERATOR,
    )
    raced: list[UUID] = []

    def start_one_meanwhile(change: object, kind: object) -> None:
        """A worker starts a task of the batch after it was loaded, before it is saved."""
        if not raced:
            raced.append(tasks[1])
            start(runtime.store, tasks[1])

    done = runtime.ledger.bulk_run(bulk.id, permit=start_one_meanwhile)  # type: ignore[arg-type]
    assert (done.changed, done.skipped) == (2, 1)
    assert runtime.ledger.task(tasks[1]).state is TaskState.RUNNING
    assert runtime.ledger.task(tasks[1]).priority == 0
    assert {runtime.ledger.task(t).priority for t in (tasks[0], tasks[2])} == {9}


def test_a_run_asked_to_stop_ends_between_batches_and_records_why(runtime: Runtime) -> None:
    tasks = enqueue(runtime, 5, tags=("t",))
    runtime.catch_up()
    ledger = runtime.ledger
    bulk = ledger.bulk_request(request(runtime, "cancel", tag="t"), OPERATOR)  # type: ignore[arg-type]
    actions = BulkActions(ledger.store, ledger.registry, ledger.clock, ledger.running, 2)
    batches: list[int] = []
    with pytest.raises(Exception, match="asked to stop"):
        actions.run(
            bulk.id,
            progress=lambda a: batches.append(a.changed),
            should_stop=lambda: len(batches) >= 1,
        )
    stopped = ledger.bulk_action(bulk.id)
    assert (stopped.state, stopped.changed, stopped.skipped) == ("stopped", 2, 0)
    assert "asked to stop" in (stopped.stop_reason or "")
    states = [ledger.task(t).state for t in tasks]
    assert states == [TaskState.CANCELLED] * 2 + [TaskState.READY] * 3
    with pytest.raises(InvalidTransition, match="is stopped already"):
        ledger.bulk_run(bulk.id)


def test_a_bulk_retry_takes_singleton_keys_again_and_skips_a_retry_whose_key_is_held(
    runtime: Runtime,
) -> None:
    """As a single retry does: a retried task holds its singleton key again; one whose key a
    live task holds now, or an earlier retry of the same page takes, is skipped (a second
    live task of a key would break the singleton)."""
    from tests.adapters.test_singletons import key_rows

    free = runtime.ledger.enqueue(TaskRequest("echo", {"n": 1}, singleton="free"))
    held = runtime.ledger.enqueue(TaskRequest("echo", {"n": 2}, singleton="held"))
    twins = []
    for n in (3, 4):  # one after the other: a cancel frees the key for the next
        twins.append(runtime.ledger.enqueue(TaskRequest("echo", {"n": n}, singleton="twin")).id)
        runtime.ledger.cancel(twins[-1])
    for task_id in (free.id, held.id):
        runtime.ledger.cancel(task_id)
    holder = runtime.ledger.enqueue(TaskRequest("echo", {"n": 5}, singleton="held"))
    runtime.catch_up()
    bulk = run(runtime, "retry", state="cancelled")
    assert (bulk.changed, bulk.skipped) == (2, 2)  # "free" and one twin; "held", a twin
    assert runtime.ledger.task(held.id).state is TaskState.CANCELLED
    retried_twins = [t for t in twins if runtime.ledger.task(t).state is not TaskState.CANCELLED]
    assert len(retried_twins) == 1
    assert key_rows(runtime) == [
        ("echo", "free", free.id),
        ("echo", "held", holder.id),
        ("echo", "twin", retried_twins[0]),
    ]
