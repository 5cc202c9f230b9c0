"""What a worker round decides, without a database: an outcome of an attempt that ended
elsewhere is dropped, each kept outcome gets its events (and a retry when the policy
allows), a due task starts with the lease its heartbeat timeout gives, inputs are resolved
for the attempt, and a dependent just unblocked starts directly only where that passes no
other task."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any
from uuid import UUID

from execution_ledger.domain.execution import AttemptOutcome, Failure, Success
from execution_ledger.domain.registry import Registry, build_registry
from execution_ledger.domain.submission import Requester, SubmissionContext, TaskRequest, plan_tasks
from execution_ledger.domain.task import Task, TaskState
from execution_ledger.domain.timeouts import TimeoutOverrides, Timeouts
from execution_ledger.domain.worker_round import (
    DEFAULT_HEARTBEAT_SECONDS,
    Start,
    claimed,
    direct_starts,
    inputs_wanted,
    reads_again,
    record_outcomes,
    record_progress,
    start_attempt,
    start_due,
    still_runs,
    with_inputs,
)
from tests.domain.test_task_lifecycle import events_of

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
REGISTRY = build_registry(
    {
        "defaults": {"timeouts": {"heartbeat": "20s"}},
        "queues": {"fast": {}, "slow": {}},
        "task_types": {
            "echo": {"adapter": "python", "queue": "fast", "retry": {"max_attempts": 2}},
            "once": {"adapter": "python", "queue": "fast", "retry": {"max_attempts": 1}},
        },
    }
)
_ids = (UUID(int=n) for n in count(1000))


def planned(
    *requests: TaskRequest,
    stored: dict[UUID, TaskState] | None = None,
    registry: Registry = REGISTRY,
) -> list[Task]:
    """New tasks planned as the product plans them, their events collected."""
    context = SubmissionContext(registry, Requester("alice", "admin"), NOW, lambda: next(_ids))
    tasks = plan_tasks(context, list(requests), stored or {})
    for task in tasks:
        task.collect_events()
    return tasks


def running(type_name: str = "echo", **request: Any) -> Task:
    """A task whose first attempt runs, its events collected."""
    [task] = planned(TaskRequest(type_name, {"n": 1}, **request))
    task.start("worker-1", NOW + timedelta(seconds=30), NOW)
    task.collect_events()
    return task


def draws() -> Iterator[float]:
    return iter([0.5] * 10)


# -- outcomes ---------------------------------------------------------------------------


def test_only_the_running_attempt_of_a_running_task_still_runs() -> None:
    task = running()
    assert still_runs(task, 1)
    assert not still_runs(task, 2)
    task.cancel(by="alice")
    assert not still_runs(task, 1)


def test_a_success_is_recorded_on_its_task() -> None:
    task = running()
    outcome = AttemptOutcome(task.id, 1, Success({"ok": True}))
    changed, dropped = record_outcomes([outcome], {task.id: task}, REGISTRY, NOW, draws().__next__)
    assert changed == [task] and dropped == []
    assert events_of(task) == ["TaskSucceeded"]
    assert task.result == {"ok": True}


def test_a_failure_the_policy_retries_gets_its_retry_after_the_drawn_back_off() -> None:
    task = running()
    outcome = AttemptOutcome(task.id, 1, Failure("Boom", "it broke"))
    record_outcomes([outcome], {task.id: task}, REGISTRY, NOW, draws().__next__)
    assert events_of(task) == ["TaskFailed", "TaskRetryScheduled"]
    assert task.state is TaskState.SCHEDULED and task.run_at is not None and task.run_at > NOW


def test_a_failure_on_the_last_attempt_fails_the_task() -> None:
    task = running("once")
    outcome = AttemptOutcome(task.id, 1, Failure("Boom", "it broke"))
    record_outcomes([outcome], {task.id: task}, REGISTRY, NOW, draws().__next__)
    assert events_of(task) == ["TaskFailed"]
    assert task.state is TaskState.FAILED


def test_an_attempt_its_worker_timed_out_is_recorded_as_a_start_to_close_timeout() -> None:
    task = running()
    outcome = AttemptOutcome(task.id, 1, timed_out=True)
    record_outcomes([outcome], {task.id: task}, REGISTRY, NOW, draws().__next__)
    [timed_out, retry] = task.collect_events()
    assert type(timed_out).__name__ == "TaskTimedOut"
    assert timed_out.kind == "start_to_close"  # type: ignore[attr-defined]
    assert type(retry).__name__ == "TaskRetryScheduled"


def test_the_outcome_of_an_attempt_that_ended_elsewhere_is_dropped_and_draws_nothing() -> None:
    cancelled, later, kept = running(), running(), running()
    cancelled.cancel(by="alice")
    cancelled.collect_events()
    drawn: list[float] = []

    def jitter() -> float:
        drawn.append(0.5)
        return 0.5

    outcomes = [
        AttemptOutcome(cancelled.id, 1, Failure("Boom", "late")),
        AttemptOutcome(later.id, 2, Failure("Boom", "not its attempt")),
        AttemptOutcome(kept.id, 1, Failure("Boom", "it broke")),
    ]
    tasks = {t.id: t for t in (cancelled, later, kept)}
    changed, dropped = record_outcomes(outcomes, tasks, REGISTRY, NOW, jitter)
    assert changed == [kept]
    assert dropped == outcomes[:2]
    assert events_of(cancelled) == [] and events_of(later) == []
    assert drawn == [0.5]  # only the kept failure drew its back-off


def test_a_parent_comes_before_the_children_its_success_spawned() -> None:
    parent = running()
    result = Success({"children": [{"type": "echo", "args": {"n": 2}}], "wait": True})
    ids = iter([UUID(int=7)])
    changed, _ = record_outcomes(
        [AttemptOutcome(parent.id, 1, result)],
        {parent.id: parent},
        REGISTRY,
        NOW,
        draws().__next__,
        new_id=lambda: next(ids),
    )
    assert [t.id for t in changed] == [parent.id, UUID(int=7)]
    assert events_of(parent) == ["TaskChildrenSpawned"]
    assert changed[1].parent_id == parent.id and changed[1].state is TaskState.READY


def test_progress_becomes_a_heartbeat_only_while_its_attempt_runs() -> None:
    task = running()
    lease = NOW + timedelta(seconds=60)
    assert record_progress(task, 1, lease, 0.5, "half way")
    assert events_of(task) == ["TaskHeartbeat"]
    assert task.lease_expires_at == lease
    assert not record_progress(task, 2, lease, 0.9, "not its attempt")
    assert events_of(task) == []


# -- starts -----------------------------------------------------------------------------


def test_a_start_leases_the_attempt_for_the_tasks_heartbeat_timeout() -> None:
    [task] = planned(TaskRequest("echo", timeouts=TimeoutOverrides(heartbeat=5.0)))
    start = start_attempt(task, "worker-1", NOW, REGISTRY)
    assert (start.attempt, start.heartbeat, start.timeouts.heartbeat) == (1, 5.0, 5.0)
    assert events_of(task) == ["TaskStarted"]
    assert task.state is TaskState.RUNNING and task.worker == "worker-1"
    assert task.lease_expires_at == NOW + timedelta(seconds=5)


def test_without_a_heartbeat_of_its_own_the_lease_lasts_the_registry_default() -> None:
    [task] = planned(TaskRequest("echo"))
    assert start_attempt(task, "worker-1", NOW, REGISTRY).heartbeat == 20.0
    no_default = dataclasses.replace(REGISTRY, default_timeouts=Timeouts(start_to_close=60.0))
    [bare] = planned(TaskRequest("echo"), registry=no_default)
    assert start_attempt(bare, "w", NOW, no_default).heartbeat == DEFAULT_HEARTBEAT_SECONDS


def test_only_due_tasks_start_a_task_a_moment_ahead_waits_for_the_next_claim() -> None:
    due, ahead = planned(
        TaskRequest("echo"), TaskRequest("echo", run_at=NOW + timedelta(milliseconds=5))
    )
    started = start_due([due, ahead], "worker-1", NOW, REGISTRY)
    assert [s.task for s in started] == [due]
    assert ahead.state is TaskState.SCHEDULED and events_of(ahead) == []


def test_the_claimed_attempt_carries_what_its_worker_needs() -> None:
    [task] = planned(TaskRequest("echo", {"n": 3}, lane="user-1"))
    attempt = claimed(start_attempt(task, "worker-1", NOW, REGISTRY))
    assert (attempt.task_id, attempt.attempt, attempt.type_name) == (task.id, 1, "echo")
    assert (attempt.args, attempt.queue, attempt.lane) == ({"n": 3}, "fast", "user-1")
    assert attempt.timeouts.heartbeat == 20.0 and attempt.inputs is None


def test_inputs_are_resolved_from_the_dependencies_results_or_refuse_the_attempt() -> None:
    dep_id = UUID(int=1)
    [task] = planned(
        TaskRequest("echo", depends_on=(str(dep_id),), inputs={"x": str(dep_id)}),
        stored={dep_id: TaskState.SUCCEEDED},  # ready at once
    )
    [plain] = planned(TaskRequest("echo"))
    starts = [start_attempt(t, "w", NOW, REGISTRY) for t in (task, plain)]
    assert inputs_wanted(starts) == {dep_id}
    attempts = [claimed(s) for s in starts]

    [dependency] = planned(TaskRequest("echo"))
    dependency.start("w", NOW, NOW)
    dependency.succeed(1, 42)
    resolved = with_inputs(attempts, starts, {dep_id: dependency}, max_bytes=1000)
    assert resolved[0].inputs == {"x": {"task_id": str(dep_id), "result": 42}}
    assert resolved[0].refused is None
    assert resolved[1] is attempts[1]

    refused = with_inputs(attempts, starts, {}, max_bytes=1000)
    assert refused[0].inputs is None
    assert refused[0].refused is not None and refused[0].refused.error_class == "InputMissing"


# -- dependents unblocked in the round ----------------------------------------------------


def unblocked(*requests: TaskRequest) -> list[Task]:
    """Tasks that waited for a dependency, just unblocked (events collected)."""
    dependency = UUID(int=999)
    tasks = planned(
        *(dataclasses.replace(r, depends_on=(str(dependency),)) for r in requests),
        stored={dependency: TaskState.RUNNING},
    )
    for task in tasks:
        assert task.state is TaskState.BLOCKED
        task.unblock(NOW)
        task.collect_events()
    return tasks


def started_in(queue: str) -> Start:
    [task] = planned(TaskRequest("echo", queue=queue))
    return start_attempt(task, "w", NOW, REGISTRY)


def never_limited(_queue: str) -> bool:
    return False


def test_a_dependent_starts_directly_where_its_queue_was_read_to_the_end_with_budget_left() -> None:
    free = unblocked(TaskRequest("echo"), TaskRequest("echo", queue="slow"))
    direct = direct_starts(
        free, [], 10, frozenset({"fast"}), {"fast": 5, "slow": 5}, never_limited, NOW
    )
    assert direct == free[:1]  # "slow" was not read to its end: another task may come first


def test_a_dependent_with_a_lane_or_a_rate_limited_queue_waits_for_the_next_read() -> None:
    [laned] = unblocked(TaskRequest("echo", lane="user-1"))
    exhausted, budgets = frozenset({"fast"}), {"fast": 5}
    assert direct_starts([laned], [], 10, exhausted, budgets, never_limited, NOW) == []
    [plain] = unblocked(TaskRequest("echo"))
    assert direct_starts([plain], [], 10, exhausted, budgets, lambda q: q == "fast", NOW) == []


def test_direct_starts_stay_within_the_queue_budget_and_the_round_limit() -> None:
    free = unblocked(*(TaskRequest("echo") for _ in range(3)))
    exhausted = frozenset({"fast"})
    one_started = [started_in("fast")]
    assert direct_starts(free, one_started, 10, exhausted, {"fast": 2}, never_limited, NOW) == [
        free[0]
    ]
    assert direct_starts(free, one_started, 3, exhausted, {"fast": 9}, never_limited, NOW) == [
        free[0],
        free[1],
    ]


def test_a_dependent_not_yet_due_does_not_start_directly() -> None:
    [later] = unblocked(TaskRequest("echo", run_at=NOW + timedelta(minutes=1)))
    assert later.state is TaskState.SCHEDULED
    budgets = {"fast": 5}
    assert direct_starts([later], [], 10, frozenset({"fast"}), budgets, never_limited, NOW) == []


def test_the_round_reads_again_while_a_dependent_it_unblocked_waits_and_it_has_room() -> None:
    waiting, direct = unblocked(TaskRequest("echo"), TaskRequest("echo"))
    start_attempt(direct, "w", NOW, REGISTRY)
    assert reads_again([waiting, direct], started=1, limit=2)
    assert not reads_again([waiting, direct], started=2, limit=2)  # no room left
    assert not reads_again([direct], started=1, limit=2)  # every one already started
    assert not reads_again([], started=0, limit=2)
