"""The Task aggregate's life cycle: each allowed transition records exactly one event, each
refused one raises ``InvalidTransition`` and records nothing, and a task replayed from its
events is the same task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from uuid import UUID

import pytest

from execution_ledger.domain.errors import InvalidTransition
from execution_ledger.domain.registry import build_registry
from execution_ledger.domain.submission import Requester, SubmissionContext, TaskRequest, plan_tasks
from execution_ledger.domain.task import Task, TaskState, event_name
from execution_ledger.domain.timeouts import TimeoutKind

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
LEASE = NOW + timedelta(seconds=30)
UNFINISHED_DEPENDENCY = UUID(int=999)

REGISTRY = build_registry(
    {"task_types": {"echo": {"adapter": "python", "retry": {"max_attempts": 2}}}}
)


def enqueue(*, run_at: datetime | None = None, blocked: bool = False) -> Task:
    """A new ``echo`` task (2 attempts), planned as the product plans it.

    Its ``TaskEnqueued`` event is still pending.
    """
    ids = (UUID(int=n) for n in count(1))
    context = SubmissionContext(REGISTRY, Requester("alice", "coder"), NOW, lambda: next(ids))
    request = TaskRequest(
        "echo",
        {"greeting": "hi"},
        run_at=run_at,
        depends_on=(str(UNFINISHED_DEPENDENCY),) if blocked else (),
    )
    stored = {UNFINISHED_DEPENDENCY: TaskState.RUNNING}
    [task] = plan_tasks(context, [request], stored)
    return task


def events_of(task: Task) -> list[str]:
    """Names of the events recorded since the last call (and forgets them)."""
    return [type(e).__name__ for e in task.collect_events()]


def brought_to(state: str) -> Task:
    """A task brought to ``state`` through its public methods; its events are pending.

    A running, succeeded or failed task is at attempt 1 (of 2).
    """
    if state == "blocked":
        task = enqueue(blocked=True)
    elif state == "skipped":
        task = brought_to("blocked")
        task.skip("dependency failed", UNFINISHED_DEPENDENCY)
    elif state == "scheduled":
        task = enqueue(run_at=LATER)
    elif state == "ready":
        task = enqueue()
    elif state == "running":
        task = enqueue()
        task.start("worker-1", LEASE, NOW)
    elif state == "succeeded":
        task = brought_to("running")
        task.succeed(1, {"ok": True})
    elif state == "failed":
        task = brought_to("running")
        task.fail(1, "Boom", "it broke")
    elif state == "cancelled":
        task = enqueue()
        task.cancel(by="alice")
    elif state == "waiting":  # an attempt that spawned a child to wait for
        task = brought_to("running")
        task.spawn_children(1, [UNFINISHED_DEPENDENCY], True, "fail", None, {})
    else:  # pragma: no cover - a typo in a test
        raise ValueError(state)
    assert task.state is TaskState(state)
    return task


def task_in(state: str) -> Task:
    """A task in ``state`` with no pending events."""
    task = brought_to(state)
    task.collect_events()
    return task


# -- enqueueing -------------------------------------------------------------------------


def test_an_enqueued_task_without_dependencies_is_ready_with_no_attempts() -> None:
    task = enqueue()

    assert task.state is TaskState.READY
    assert task.attempts == 0
    assert task.max_attempts == 2
    assert events_of(task) == ["TaskEnqueued"]


def test_an_enqueued_task_waiting_on_an_unfinished_dependency_is_blocked() -> None:
    task = enqueue(blocked=True)

    assert task.state is TaskState.BLOCKED
    assert task.depends_on == [UNFINISHED_DEPENDENCY]
    assert events_of(task) == ["TaskEnqueued"]


def test_an_enqueued_task_with_a_future_run_at_is_scheduled() -> None:
    task = enqueue(run_at=LATER)

    assert task.state is TaskState.SCHEDULED
    assert not task.is_due(NOW)
    assert task.is_due(LATER)
    assert events_of(task) == ["TaskEnqueued"]


# -- dependencies -----------------------------------------------------------------------


def test_unblocking_a_blocked_task_makes_it_ready() -> None:
    task = task_in("blocked")

    task.unblock(NOW)

    assert task.state is TaskState.READY
    assert task.attempts == 0
    assert events_of(task) == ["TaskUnblocked"]


def test_unblocking_a_blocked_task_whose_run_at_is_later_makes_it_scheduled() -> None:
    task = enqueue(blocked=True, run_at=LATER)
    task.collect_events()

    task.unblock(NOW)

    assert task.state is TaskState.SCHEDULED
    assert events_of(task) == ["TaskUnblocked"]


def test_skipping_a_blocked_task_ends_it_as_skipped() -> None:
    task = task_in("blocked")

    task.skip("dependency failed", UNFINISHED_DEPENDENCY)

    assert task.state is TaskState.SKIPPED
    assert task.state.is_terminal
    assert task.attempts == 0
    [skipped] = task.collect_events()
    assert type(skipped).__name__ == "TaskSkipped"
    assert skipped.dependency == UNFINISHED_DEPENDENCY
    assert skipped.reason == "dependency failed"


# -- attempts ---------------------------------------------------------------------------


def test_starting_a_ready_task_begins_attempt_one_for_the_worker() -> None:
    task = task_in("ready")

    attempt = task.start("worker-1", LEASE, NOW)

    assert attempt == 1
    assert task.state is TaskState.RUNNING
    assert task.attempts == 1
    assert task.worker == "worker-1"
    assert task.lease_expires_at == LEASE
    assert events_of(task) == ["TaskStarted"]


def test_starting_a_scheduled_task_once_its_run_at_has_come_is_allowed() -> None:
    task = task_in("scheduled")

    attempt = task.start("worker-1", LATER + timedelta(seconds=30), LATER)

    assert attempt == 1
    assert task.state is TaskState.RUNNING
    assert events_of(task) == ["TaskStarted"]


def test_a_heartbeat_of_the_current_attempt_extends_its_lease() -> None:
    task = task_in("running")
    renewed = LEASE + timedelta(seconds=30)

    task.heartbeat(1, renewed)

    assert task.state is TaskState.RUNNING
    assert task.attempts == 1
    assert task.lease_expires_at == renewed
    assert events_of(task) == ["TaskHeartbeat"]


def test_success_of_the_current_attempt_records_the_result() -> None:
    task = task_in("running")

    task.succeed(1, {"answer": 42}, {"duration_ms": 3})

    assert task.state is TaskState.SUCCEEDED
    assert task.attempts == 1
    assert task.result == {"answer": 42}
    assert task.error is None
    assert task.lease_expires_at is None
    assert events_of(task) == ["TaskSucceeded"]


def test_failure_of_the_current_attempt_records_the_error() -> None:
    task = task_in("running")

    task.fail(1, "ExitCode", "exit code 3", retryable=False)

    assert task.state is TaskState.FAILED
    assert task.attempts == 1
    assert task.error == {"class": "ExitCode", "message": "exit code 3", "retryable": False}
    assert task.lease_expires_at is None
    assert events_of(task) == ["TaskFailed"]


@pytest.mark.parametrize("kind", [TimeoutKind.START_TO_CLOSE, TimeoutKind.HEARTBEAT])
def test_an_attempt_timeout_of_a_running_task_fails_the_current_attempt(
    kind: TimeoutKind,
) -> None:
    task = task_in("running")

    task.time_out(kind)

    assert task.state is TaskState.FAILED
    assert task.attempts == 1
    assert task.timeout_kind == kind.value
    assert task.error == {"class": "Timeout", "message": f"{kind.value} timeout", "retryable": True}
    [timed_out] = task.collect_events()
    assert type(timed_out).__name__ == "TaskTimedOut"
    assert (timed_out.kind, timed_out.attempt) == (kind.value, 1)


@pytest.mark.parametrize("state", ["ready", "scheduled"])
def test_a_schedule_to_start_timeout_of_a_waiting_task_fails_it_without_an_attempt(
    state: str,
) -> None:
    task = task_in(state)

    task.time_out(TimeoutKind.SCHEDULE_TO_START)

    assert task.state is TaskState.FAILED
    assert task.attempts == 0
    [timed_out] = task.collect_events()
    assert type(timed_out).__name__ == "TaskTimedOut"
    assert (timed_out.kind, timed_out.attempt) == ("schedule_to_start", None)


@pytest.mark.parametrize(("state", "attempt"), [("blocked", None), ("ready", None), ("running", 1)])
def test_a_schedule_to_close_timeout_fails_an_unfinished_task(
    state: str, attempt: int | None
) -> None:
    task = task_in(state)

    task.time_out(TimeoutKind.SCHEDULE_TO_CLOSE)

    assert task.state is TaskState.FAILED
    [timed_out] = task.collect_events()
    assert type(timed_out).__name__ == "TaskTimedOut"
    assert (timed_out.kind, timed_out.attempt) == ("schedule_to_close", attempt)


def test_a_retry_after_a_failed_attempt_schedules_the_next_attempt_at_retry_at() -> None:
    task = task_in("failed")

    task.schedule_retry(LATER)

    assert task.state is TaskState.SCHEDULED
    assert task.run_at == LATER
    assert task.attempts == 1
    [retry] = task.collect_events()
    assert type(retry).__name__ == "TaskRetryScheduled"
    assert (retry.manual, retry.by) == (False, None)
    assert not task.is_due(NOW)
    assert task.start("worker-2", LATER + timedelta(seconds=30), LATER) == 2
    assert task.attempts == 2


@pytest.mark.parametrize("kind", [TimeoutKind.START_TO_CLOSE, TimeoutKind.HEARTBEAT])
def test_a_retry_after_an_attempt_timeout_is_allowed(kind: TimeoutKind) -> None:
    task = task_in("running")
    task.time_out(kind)
    task.collect_events()

    task.schedule_retry(LATER)

    assert task.state is TaskState.SCHEDULED
    assert task.timeout_kind is None
    assert events_of(task) == ["TaskRetryScheduled"]


@pytest.mark.parametrize("state", ["failed", "cancelled", "skipped"])
def test_a_manual_retry_reschedules_an_ended_task_for_one_more_attempt(state: str) -> None:
    task = task_in(state)
    attempts_before = task.attempts

    task.retry_manually(LATER, by="root")

    assert task.state is TaskState.SCHEDULED
    assert task.run_at == LATER
    assert task.attempts == attempts_before
    assert task.max_attempts >= attempts_before + 1
    [retry] = task.collect_events()
    assert type(retry).__name__ == "TaskRetryScheduled"
    assert (retry.manual, retry.by) == (True, "root")


def test_a_manual_retry_grants_an_attempt_beyond_the_exhausted_budget() -> None:
    task = task_in("failed")
    task.schedule_retry(NOW)
    task.start("worker-2", LEASE, NOW)
    task.fail(2, "Boom", "again")
    task.collect_events()
    assert task.max_attempts == 2

    task.retry_manually(NOW, by="root")

    assert task.max_attempts == 3
    assert task.start("worker-3", LEASE, NOW) == 3


@pytest.mark.parametrize("state", ["blocked", "scheduled", "ready", "running"])
def test_cancelling_an_unfinished_task_ends_it_as_cancelled(state: str) -> None:
    task = task_in(state)

    task.cancel(by="alice", reason="no longer needed")

    assert task.state is TaskState.CANCELLED
    assert task.lease_expires_at is None
    [cancelled] = task.collect_events()
    assert type(cancelled).__name__ == "TaskCancelled"
    assert (cancelled.by, cancelled.reason) == ("alice", "no longer needed")


# -- refused transitions ------------------------------------------------------------------


def test_starting_a_cancelled_task_is_refused() -> None:
    task = task_in("cancelled")

    with pytest.raises(InvalidTransition, match="cannot start: it is cancelled"):
        task.start("worker-1", LEASE, NOW)
    assert task.collect_events() == []


def test_starting_a_blocked_task_is_refused() -> None:
    task = task_in("blocked")

    with pytest.raises(InvalidTransition, match="cannot start: it is blocked"):
        task.start("worker-1", LEASE, NOW)


def test_starting_a_scheduled_task_before_its_run_at_is_refused() -> None:
    task = task_in("scheduled")

    with pytest.raises(InvalidTransition, match="it is scheduled and not yet due"):
        task.start("worker-1", LEASE, LATER - timedelta(seconds=1))
    assert task.state is TaskState.SCHEDULED
    assert task.collect_events() == []


def test_starting_a_retry_before_its_back_off_has_passed_is_refused() -> None:
    task = task_in("failed")
    task.schedule_retry(LATER)

    with pytest.raises(InvalidTransition, match="not yet due"):
        task.start("worker-2", LEASE, NOW)


def test_starting_a_running_task_again_is_refused() -> None:
    task = task_in("running")

    with pytest.raises(InvalidTransition, match="it is running"):
        task.start("worker-2", LEASE, NOW)
    assert task.worker == "worker-1"


@pytest.mark.parametrize(
    "finish",
    [
        pytest.param(lambda task, n: task.succeed(n, "late"), id="succeed"),
        pytest.param(lambda task, n: task.fail(n, "Boom", "late"), id="fail"),
        pytest.param(lambda task, n: task.heartbeat(n, LATER), id="heartbeat"),
    ],
)
def test_an_earlier_attempt_cannot_report_once_a_later_attempt_runs(finish) -> None:
    task = task_in("running")
    task.time_out(TimeoutKind.HEARTBEAT)
    task.schedule_retry(NOW)
    task.start("worker-2", LEASE, NOW)
    task.collect_events()

    with pytest.raises(InvalidTransition, match=r"attempt 1 .* the current attempt is 2"):
        finish(task, 1)
    assert task.state is TaskState.RUNNING
    assert task.worker == "worker-2"
    assert task.collect_events() == []


@pytest.mark.parametrize(
    "finish",
    [
        pytest.param(lambda task, n: task.succeed(n, "?"), id="succeed"),
        pytest.param(lambda task, n: task.fail(n, "Boom", "?"), id="fail"),
        pytest.param(lambda task, n: task.heartbeat(n, LATER), id="heartbeat"),
    ],
)
def test_an_attempt_that_was_never_started_cannot_report(finish) -> None:
    task = task_in("running")

    with pytest.raises(InvalidTransition, match="the current attempt is 1"):
        finish(task, 2)


def test_a_result_arriving_after_its_attempt_timed_out_is_refused() -> None:
    task = task_in("running")
    task.time_out(TimeoutKind.START_TO_CLOSE)

    with pytest.raises(InvalidTransition, match=r"cannot succeed .* it is failed"):
        task.succeed(1, "too late")
    assert task.result is None


def test_a_result_arriving_after_the_task_was_cancelled_is_refused() -> None:
    task = task_in("running")
    task.cancel(by="alice")

    with pytest.raises(InvalidTransition, match="it is cancelled"):
        task.succeed(1, "too late")
    assert task.state is TaskState.CANCELLED


def test_cancelling_a_succeeded_task_is_refused() -> None:
    task = task_in("succeeded")

    with pytest.raises(InvalidTransition, match=r"cannot cancel task .*: it is succeeded"):
        task.cancel(by="alice")
    assert task.state is TaskState.SUCCEEDED


def test_skipping_a_ready_task_is_refused() -> None:
    task = task_in("ready")

    with pytest.raises(InvalidTransition, match=r"cannot skip task .*: it is ready"):
        task.skip("dependency failed", UNFINISHED_DEPENDENCY)


def test_a_retry_beyond_max_attempts_is_refused() -> None:
    task = task_in("failed")
    task.schedule_retry(NOW)
    task.start("worker-2", LEASE, NOW)
    task.fail(2, "Boom", "again")
    task.collect_events()

    with pytest.raises(InvalidTransition, match="has used all 2 attempts"):
        task.schedule_retry(LATER)
    assert task.state is TaskState.FAILED
    assert task.collect_events() == []


@pytest.mark.parametrize(
    ("state", "kind"),
    [("running", TimeoutKind.SCHEDULE_TO_CLOSE), ("ready", TimeoutKind.SCHEDULE_TO_START)],
)
def test_a_retry_after_a_timeout_that_ends_the_task_is_refused(
    state: str, kind: TimeoutKind
) -> None:
    task = task_in(state)
    task.time_out(kind)

    with pytest.raises(InvalidTransition, match=rf"timed out \({kind.value}\); it is over"):
        task.schedule_retry(LATER)
    assert task.state is TaskState.FAILED


def test_an_automatic_retry_of_a_task_that_did_not_fail_is_refused() -> None:
    task = task_in("cancelled")

    with pytest.raises(InvalidTransition, match=r"cannot retry .*: it is cancelled"):
        task.schedule_retry(LATER)


def test_a_start_to_close_timeout_of_a_ready_task_is_refused() -> None:
    task = task_in("ready")

    with pytest.raises(InvalidTransition, match=r"time out \(start_to_close\) .*: it is ready"):
        task.time_out(TimeoutKind.START_TO_CLOSE)
    assert task.state is TaskState.READY


def test_a_schedule_to_start_timeout_of_a_blocked_task_is_refused() -> None:
    task = task_in("blocked")

    with pytest.raises(InvalidTransition, match="it is blocked"):
        task.time_out(TimeoutKind.SCHEDULE_TO_START)


def test_a_manual_retry_of_a_running_task_is_refused() -> None:
    task = task_in("running")

    with pytest.raises(InvalidTransition, match=r"cannot retry .*: it is running"):
        task.retry_manually(LATER, by="root")
    assert task.state is TaskState.RUNNING


# -- the whole table ----------------------------------------------------------------------

ACTIONS = {
    "unblock": lambda task: task.unblock(NOW),
    "skip": lambda task: task.skip("dependency failed", UNFINISHED_DEPENDENCY),
    "start": lambda task: task.start("worker-9", LEASE, NOW),
    "heartbeat": lambda task: task.heartbeat(1, LATER),
    "succeed": lambda task: task.succeed(1, "done"),
    "fail": lambda task: task.fail(1, "Boom", "broke"),
    "time out start_to_close": lambda task: task.time_out(TimeoutKind.START_TO_CLOSE),
    "time out heartbeat": lambda task: task.time_out(TimeoutKind.HEARTBEAT),
    "time out schedule_to_start": lambda task: task.time_out(TimeoutKind.SCHEDULE_TO_START),
    "time out schedule_to_close": lambda task: task.time_out(TimeoutKind.SCHEDULE_TO_CLOSE),
    "schedule retry": lambda task: task.schedule_retry(LATER),
    "retry manually": lambda task: task.retry_manually(LATER, by="root"),
    "cancel": lambda task: task.cancel(by="alice"),
}

# From which states each action is allowed (a scheduled task is not yet due at NOW).
ALLOWED_FROM = {
    "unblock": {"blocked"},
    "skip": {"blocked"},
    "start": {"ready"},
    "heartbeat": {"running"},
    "succeed": {"running"},
    "fail": {"running"},
    "time out start_to_close": {"running"},
    "time out heartbeat": {"running"},
    "time out schedule_to_start": {"scheduled", "ready"},
    "time out schedule_to_close": {"blocked", "scheduled", "ready", "running", "waiting"},
    "schedule retry": {"failed"},
    "retry manually": {"failed", "cancelled", "skipped"},
    "cancel": {"blocked", "scheduled", "ready", "running", "waiting"},
}

STATES = [state.value for state in TaskState]
ALLOWED = [(s, a) for a in ACTIONS for s in STATES if s in ALLOWED_FROM[a]]
REFUSED = [(s, a) for a in ACTIONS for s in STATES if s not in ALLOWED_FROM[a]]


@pytest.mark.parametrize(("state", "action"), ALLOWED, ids=[f"{a} {s}" for s, a in ALLOWED])
def test_an_allowed_action_records_exactly_one_event(state: str, action: str) -> None:
    task = task_in(state)

    ACTIONS[action](task)

    assert len(task.collect_events()) == 1


@pytest.mark.parametrize(("state", "action"), REFUSED, ids=[f"{a} {s}" for s, a in REFUSED])
def test_a_refused_action_records_nothing_and_leaves_the_task_as_it_was(
    state: str, action: str
) -> None:
    task = task_in(state)
    version = task.version

    with pytest.raises(InvalidTransition):
        ACTIONS[action](task)

    assert task.state is TaskState(state)
    assert task.version == version
    assert task.collect_events() == []


# -- replay -------------------------------------------------------------------------------


def replay(events: list) -> Task:
    copy = None
    for recorded in events:
        copy = recorded.mutate(copy)
    assert copy is not None
    return copy


def observable(task: Task) -> dict:
    return {k: v for k, v in vars(task).items() if k != "_pending_events"}


def test_a_task_replayed_from_its_events_equals_the_original() -> None:
    task = enqueue(blocked=True)
    task.unblock(NOW)
    task.start("worker-1", LEASE, NOW)
    task.heartbeat(1, LATER)
    task.time_out(TimeoutKind.HEARTBEAT)
    task.schedule_retry(LATER)
    task.start("worker-2", LATER + timedelta(seconds=30), LATER)
    task.fail(2, "Boom", "again")
    task.retry_manually(LATER, by="root")
    task.start("worker-3", LATER + timedelta(seconds=30), LATER)
    task.succeed(3, {"answer": 42})
    events = task.collect_events()

    copy = replay(events)

    assert [event_name(type(e)) for e in events] == [
        "TaskEnqueued", "TaskUnblocked", "TaskStarted", "TaskHeartbeat", "TaskTimedOut",
        "TaskRetryScheduled", "TaskStarted", "TaskFailed", "TaskRetryScheduled",
        "TaskStarted", "TaskSucceeded",
    ]  # fmt: skip
    assert copy.state is TaskState.SUCCEEDED
    assert (copy.attempts, copy.max_attempts, copy.worker) == (3, 3, "worker-3")
    assert copy.version == task.version == len(events)
    assert observable(copy) == observable(task)


@pytest.mark.parametrize("state", STATES)
def test_a_task_replayed_in_any_state_equals_the_original(state: str) -> None:
    task = brought_to(state)

    copy = replay(task.collect_events())

    assert copy.state is TaskState(state)
    assert observable(copy) == observable(task)


def test_event_names_are_read_from_stored_topics_and_classes() -> None:
    assert event_name("domain.task:Task.TaskStarted") == "TaskStarted"
    assert event_name(Task.TaskSucceeded) == "TaskSucceeded"


def test_a_manual_retry_after_the_schedule_to_close_deadline_is_refused() -> None:
    task = task_in("running")
    task.time_out(TimeoutKind.SCHEDULE_TO_CLOSE)
    with pytest.raises(InvalidTransition, match="past its schedule_to_close deadline"):
        task.retry_manually(LATER, by="root")
