"""The ``Dispatch`` contract (``processors/worker.py``): what a worker may rely on when it
claims, completes and renews, on PostgreSQL and on the in-memory double alike."""

from __future__ import annotations

from datetime import timedelta

from execution_ledger.domain.execution import AttemptOutcome, Failure, Success
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from execution_ledger.processors.worker import ProgressNote
from tests.contract.conftest import BACKOFF, Backend

QUEUES = ("default", "narrow", "other")


def claim(backend: Backend, worker: str = "w1", limit: int = 10, **options: object) -> list:
    queues = options.pop("queues", QUEUES)
    return backend.dispatch.claim(queues, limit, worker, **options)  # type: ignore[arg-type]


def ok(claimed: object, result: object = None) -> AttemptOutcome:
    return AttemptOutcome(claimed.task_id, claimed.attempt, Success(result))  # type: ignore[attr-defined]


# -- claiming -------------------------------------------------------------------------------


def test_a_claim_starts_a_ready_task_as_its_first_attempt(backend: Backend) -> None:
    task = backend.enqueue("job", args={"a": 1, "b": 2})
    [claimed] = claim(backend)
    assert (claimed.task_id, claimed.attempt, claimed.type_name) == (task.id, 1, "job")
    assert (claimed.args, claimed.queue, claimed.lane) == ({"a": 1, "b": 2}, "default", None)
    assert claimed.timeouts.start_to_close == 20
    stored = backend.task(task.id)
    assert (stored.state, stored.attempts, stored.worker) == (TaskState.RUNNING, 1, "w1")


def test_a_task_is_started_by_one_claim_only(backend: Backend) -> None:
    backend.enqueue("job")
    assert len(claim(backend, "w1")) == 1
    assert claim(backend, "w2") == []
    assert claim(backend, "w1") == []


def test_a_claim_takes_at_most_its_limit_highest_priority_first_then_enqueue_order(
    backend: Backend,
) -> None:
    low_1 = backend.enqueue("job", priority=0)
    high_1 = backend.enqueue("job", priority=5)
    low_2 = backend.enqueue("job", priority=0)
    high_2 = backend.enqueue("job", priority=5)
    assert [c.task_id for c in claim(backend, limit=3)] == [high_1.id, high_2.id, low_1.id]
    assert [c.task_id for c in claim(backend, limit=3)] == [low_2.id]


def test_a_queue_never_runs_more_than_its_concurrency(backend: Backend) -> None:
    for _ in range(4):
        backend.enqueue("narrow_job")
    first = claim(backend)
    assert len(first) == 2  # the narrow queue's concurrency
    assert claim(backend) == []
    backend.dispatch.complete([ok(first[0])])
    assert len(claim(backend)) == 1


def test_a_round_records_its_outcomes_and_the_next_claim_fills_the_slots_they_free(
    backend: Backend,
) -> None:
    tasks = [backend.enqueue("narrow_job") for _ in range(3)]
    first = claim(backend)
    assert [c.task_id for c in first] == [tasks[0].id, tasks[1].id]
    again = claim(backend, outcomes=[ok(first[0], 3)]) + claim(backend)
    assert [c.task_id for c in again] == [tasks[2].id]
    assert backend.task(tasks[0].id).state is TaskState.SUCCEEDED


def test_a_lane_runs_one_attempt_at_a_time_in_enqueue_order_and_holds_back_no_other_lane(
    backend: Backend,
) -> None:
    one = [backend.enqueue("agent_step", args={"agent_id": 1}) for _ in range(3)]
    two = backend.enqueue("agent_step", args={"agent_id": 2})
    first = claim(backend)
    assert {c.task_id for c in first} == {one[0].id, two.id}
    assert {c.lane for c in first} == {"agent:1", "agent:2"}
    assert claim(backend) == []
    lane_one = next(c for c in first if c.task_id == one[0].id)
    after = claim(backend, outcomes=[ok(lane_one)]) + claim(backend)
    assert [c.task_id for c in after] == [one[1].id]


def test_only_the_queues_named_are_claimed_from(backend: Backend) -> None:
    backend.enqueue("job")
    other = backend.enqueue("other_job")
    assert [c.task_id for c in claim(backend, queues=("other",))] == [other.id]


def test_a_paused_queue_starts_nothing_while_others_go_on(backend: Backend) -> None:
    backend.enqueue("narrow_job")
    job = backend.enqueue("job")
    backend.pause_queue("narrow")
    assert [c.task_id for c in claim(backend)] == [job.id]
    assert claim(backend) == []


def test_a_task_due_later_waits_and_next_due_names_when(backend: Backend) -> None:
    later = backend.clock() + timedelta(hours=1)
    task = backend.enqueue("job", run_at=later)
    assert backend.task(task.id).state is TaskState.SCHEDULED
    assert claim(backend) == []
    assert backend.dispatch.next_due(["default"]) == later
    assert backend.dispatch.next_due(["other"]) is None


def test_a_task_whose_run_at_has_passed_is_claimed(backend: Backend) -> None:
    task = backend.enqueue("job", run_at=backend.clock() - timedelta(seconds=1))
    assert [c.task_id for c in claim(backend)] == [task.id]


def test_a_dependent_starts_in_the_round_that_records_its_dependency_success(
    backend: Backend,
) -> None:
    first, then = backend.enqueuer.enqueue_graph(
        [TaskRequest("job", ref="first"), TaskRequest("job", ref="then", depends_on=("first",))]
    )
    assert backend.task(then.id).state is TaskState.BLOCKED
    [claimed] = claim(backend)
    assert claimed.task_id == first.id
    assert [c.task_id for c in claim(backend, outcomes=[ok(claimed)])] == [then.id]


def test_a_dependent_of_a_success_recorded_apart_becomes_claimable(backend: Backend) -> None:
    _, then = backend.enqueuer.enqueue_graph(
        [TaskRequest("job", ref="first"), TaskRequest("job", ref="then", depends_on=("first",))]
    )
    [claimed] = claim(backend)
    backend.dispatch.complete([ok(claimed)])
    backend.settle()
    assert [c.task_id for c in claim(backend)] == [then.id]


def test_a_task_taking_inputs_is_given_its_dependency_result(backend: Backend) -> None:
    first, then = backend.enqueuer.enqueue_graph(
        [
            TaskRequest("job", ref="first"),
            TaskRequest("takes_inputs", ref="then", depends_on=("first",)),
        ]
    )
    [claimed] = claim(backend)
    [dependent] = claim(backend, outcomes=[ok(claimed, {"sum": 7})])
    assert dependent.task_id == then.id
    assert dependent.refused is None
    assert dependent.inputs == {"first": {"result": {"sum": 7}, "task_id": str(first.id)}}


def test_children_a_success_spawns_are_claimable_and_their_ends_decide_the_waiting_parent(
    backend: Backend,
) -> None:
    parent = backend.enqueue("job")
    [claimed] = claim(backend)
    spawn = {"children": [{"type": "job", "args": {"n": n}} for n in (1, 2)], "wait": True}
    children = claim(backend, outcomes=[ok(claimed, spawn)]) + claim(backend)
    assert sorted(c.args["n"] for c in children) == [1, 2]
    assert {backend.task(c.task_id).parent_id for c in children} == {parent.id}
    assert backend.task(parent.id).state is TaskState.WAITING
    backend.dispatch.complete([ok(children[0])])
    assert backend.task(parent.id).state is TaskState.WAITING
    backend.dispatch.complete([ok(children[1])])
    assert backend.task(parent.id).state is TaskState.SUCCEEDED


# -- recording outcomes ---------------------------------------------------------------------


def test_a_success_is_recorded_with_its_result(backend: Backend) -> None:
    task = backend.enqueue("job")
    [claimed] = claim(backend)
    backend.dispatch.complete([ok(claimed, {"sum": 3})])
    stored = backend.task(task.id)
    assert (stored.state, stored.result) == (TaskState.SUCCEEDED, {"sum": 3})


def test_an_outcome_recorded_twice_counts_once(backend: Backend) -> None:
    task = backend.enqueue("job")
    [claimed] = claim(backend)
    backend.dispatch.complete([ok(claimed, 1)])
    version = backend.task(task.id).version
    backend.dispatch.complete([ok(claimed, 2)])
    claim(backend, outcomes=[ok(claimed, 3)])
    stored = backend.task(task.id)
    assert (stored.version, stored.result) == (version, 1)


def test_the_outcome_of_a_cancelled_attempt_is_dropped(backend: Backend) -> None:
    task = backend.enqueue("job")
    [claimed] = claim(backend)
    backend.cancel(task.id)
    backend.dispatch.complete([ok(claimed, 1)])
    assert backend.task(task.id).state is TaskState.CANCELLED


def test_the_outcome_of_another_attempt_than_the_running_one_is_dropped(
    backend: Backend,
) -> None:
    task = backend.enqueue("job")
    [claimed] = claim(backend)
    stale = AttemptOutcome(task.id, claimed.attempt + 1, Success(1))
    backend.dispatch.complete([stale])
    stored = backend.task(task.id)
    assert (stored.state, stored.attempts) == (TaskState.RUNNING, 1)


def test_a_failure_schedules_a_retry_that_is_claimed_once_its_backoff_passed(
    backend: Backend,
) -> None:
    task = backend.enqueue("job")
    [claimed] = claim(backend)
    failed = AttemptOutcome(task.id, claimed.attempt, Failure("Boom", "it broke"))
    assert claim(backend, outcomes=[failed]) == []  # not before its back-off
    stored = backend.task(task.id)
    assert (stored.state, stored.attempts) == (TaskState.SCHEDULED, 1)
    assert backend.dispatch.next_due(["default"]) == stored.run_at
    backend.pass_time(BACKOFF + 0.2)
    [retried] = claim(backend)
    assert (retried.task_id, retried.attempt) == (task.id, 2)


def test_a_non_retryable_failure_ends_the_task(backend: Backend) -> None:
    task = backend.enqueue("job")
    claim(backend)
    fatal = AttemptOutcome(task.id, 1, Failure("Refused", "no", retryable=False))
    backend.dispatch.complete([fatal])
    stored = backend.task(task.id)
    assert (stored.state, stored.error["class"]) == (TaskState.FAILED, "Refused")


def test_a_timed_out_attempt_is_recorded_as_start_to_close_and_retried(backend: Backend) -> None:
    task = backend.enqueue("job")
    claim(backend)
    backend.dispatch.complete([AttemptOutcome(task.id, 1, timed_out=True)])
    stored = backend.task(task.id)
    assert (stored.state, stored.attempts) == (TaskState.SCHEDULED, 1)
    assert stored.error["message"] == "start_to_close timeout"


def test_the_last_allowed_attempt_failing_ends_the_task(backend: Backend) -> None:
    task = backend.enqueue("job", max_attempts=1)
    claim(backend)
    backend.dispatch.complete([AttemptOutcome(task.id, 1, Failure("Boom", "again"))])
    assert backend.task(task.id).state is TaskState.FAILED


# -- leases ---------------------------------------------------------------------------------


def test_renewing_keeps_the_attempts_a_worker_holds_and_no_others(backend: Backend) -> None:
    task = backend.enqueue("job")
    claim(backend, "w1")
    assert backend.dispatch.renew("w1", [task.id]) == {task.id}
    assert backend.dispatch.renew("w2", [task.id]) == set()


def test_a_cancelled_attempt_is_no_longer_held(backend: Backend) -> None:
    task = backend.enqueue("job")
    claim(backend)
    backend.cancel(task.id)
    assert backend.dispatch.renew("w1", [task.id]) == set()


def test_an_ended_attempt_is_no_longer_held(backend: Backend) -> None:
    task = backend.enqueue("job")
    [claimed] = claim(backend)
    backend.dispatch.complete([ok(claimed)])
    assert backend.dispatch.renew("w1", [task.id]) == set()


def test_progress_is_recorded_as_a_heartbeat_of_the_running_attempt(backend: Backend) -> None:
    task = backend.enqueue("job")
    claim(backend)
    note = ProgressNote(task.id, 1, 0.5, "half way")
    assert backend.dispatch.renew("w1", [task.id], [note]) == {task.id}
    stored = backend.task(task.id)
    assert (stored.progress, stored.progress_message) == (0.5, "half way")


def test_progress_of_an_ended_attempt_is_dropped(backend: Backend) -> None:
    task = backend.enqueue("job")
    [claimed] = claim(backend)
    backend.dispatch.complete([ok(claimed)])
    version = backend.task(task.id).version
    backend.dispatch.renew("w1", [task.id], [ProgressNote(task.id, 1, 0.9, None)])
    assert backend.task(task.id).version == version
