"""The one rule for a blocked task's dependencies: unblocked when every one succeeded,
skipped (naming it) as soon as one ended otherwise, waiting while one has not ended; and
the event that decision gives a loaded task, only while it is still blocked."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest

from execution_ledger.domain.dependencies import (
    UNBLOCK,
    Skip,
    Unblock,
    apply_release,
    freed_by_successes,
    release_of,
    unblock,
)
from execution_ledger.domain.task import TaskState
from tests.domain.test_task_lifecycle import UNFINISHED_DEPENDENCY, brought_to, events_of, task_in

A, B, C = UUID(int=1), UUID(int=2), UUID(int=3)
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
S = TaskState


def test_a_task_is_unblocked_once_every_dependency_succeeded() -> None:
    assert release_of([A, B], {A: S.SUCCEEDED, B: S.SUCCEEDED}) == UNBLOCK
    assert release_of([], {}) == Unblock()  # no dependency: nothing to wait for


@pytest.mark.parametrize("state", [S.RUNNING, S.READY, S.BLOCKED, S.SCHEDULED, S.WAITING])
def test_a_task_waits_while_a_dependency_is_live(state: TaskState) -> None:
    assert release_of([A, B], {A: S.SUCCEEDED, B: state}) is None


def test_a_dependency_not_known_to_have_ended_keeps_the_task_waiting() -> None:
    """How the worker round reads it: it knows only which dependencies succeeded."""
    assert release_of([A, B], {A: S.SUCCEEDED}) is None


@pytest.mark.parametrize("state", [S.FAILED, S.CANCELLED, S.SKIPPED])
def test_a_dependency_that_ended_otherwise_skips_the_task_even_while_others_wait(
    state: TaskState,
) -> None:
    assert release_of([A, B, C], {A: S.RUNNING, B: state, C: S.SUCCEEDED}) == Skip(B, state)


def test_the_first_dependency_that_ended_otherwise_is_named() -> None:
    ends = {A: S.CANCELLED, B: S.FAILED}
    assert release_of([B, A], ends) == Skip(B, S.FAILED)
    assert release_of([A, B], ends) == Skip(A, S.CANCELLED)


def test_an_unblock_gives_a_blocked_task_its_task_unblocked() -> None:
    task = brought_to("blocked")
    events_of(task)
    assert apply_release(task, UNBLOCK, NOW)
    assert events_of(task) == ["TaskUnblocked"]
    assert task.state is S.READY


def test_a_skip_gives_a_blocked_task_its_task_skipped_naming_the_dependency() -> None:
    task = brought_to("blocked")
    events_of(task)
    assert apply_release(task, Skip(UNFINISHED_DEPENDENCY, S.FAILED), NOW)
    [skipped] = task.collect_events()
    assert type(skipped).__name__ == "TaskSkipped"
    assert skipped.reason == f"dependency {UNFINISHED_DEPENDENCY} ended failed"  # type: ignore[attr-defined]
    assert task.state is S.SKIPPED


@pytest.mark.parametrize("state", ["ready", "cancelled", "skipped"])
def test_a_task_no_longer_blocked_gets_no_event(state: str) -> None:
    task = brought_to(state)
    events_of(task)
    assert not apply_release(task, UNBLOCK, NOW)
    assert not apply_release(task, Skip(UNFINISHED_DEPENDENCY, S.FAILED), NOW)
    assert events_of(task) == []


def test_a_worker_round_frees_the_blocked_tasks_whose_every_dependency_it_knows_succeeded() -> None:
    """How the worker round reads the rule: it knows only successes (its own, and those
    already stored), so a task with a dependency not among them stays blocked."""
    D, E = UUID(int=4), UUID(int=5)
    blocked = [(E, [A, B]), (D, [A]), (C, [A, UNFINISHED_DEPENDENCY])]
    assert freed_by_successes(blocked, {A, B}) == [D, E]  # sorted
    assert freed_by_successes(blocked, set()) == []


def test_unblocking_gives_only_the_tasks_still_blocked_their_event() -> None:
    blocked, cancelled = task_in("blocked"), task_in("cancelled")
    assert unblock([blocked, cancelled], NOW) == [blocked]
    assert events_of(blocked) == ["TaskUnblocked"] and events_of(cancelled) == []
