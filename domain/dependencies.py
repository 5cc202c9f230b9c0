"""When a blocked task goes on: the one rule for its dependencies' ends.

A task enqueued with dependencies waits (``blocked``) until they end. When every one of
them succeeded it is unblocked (``TaskUnblocked``); as soon as one ended any other way
(failed for good, cancelled, skipped) it is skipped naming that dependency (``TaskSkipped``,
itself an end, so the skip goes on down the graph). While one has not ended, it waits.

``release_of`` decides from the dependencies' ends; ``apply_release`` gives a loaded task
the event of that decision, if it is still blocked. Two places apply them: the dependency
cascade (``processors/dependency_cascade.py``) on the readiness graph's changes, and the
worker round that records a success (``adapters/postgres/inline_unblock.py``) on the
dispatch queue's blocked rows, through ``freed_by_successes`` and ``unblock``. The
readiness graph keeps the same rule incrementally (a count of pending dependencies per
task, ``projections/readiness.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from execution_ledger.domain.task import Task, TaskState


@dataclass(frozen=True)
class Unblock:
    """Every dependency succeeded: the task may run."""


@dataclass(frozen=True)
class Skip:
    """``dependency`` ended ``state`` (not succeeded): the task will never run."""

    dependency: UUID
    state: TaskState


Release = Unblock | Skip
UNBLOCK: Final = Unblock()


def release_of(depends_on: Iterable[UUID], ends: Mapping[UUID, TaskState]) -> Release | None:
    """What the dependencies' ends decide for a blocked task: ``Skip`` for the first
    dependency (in ``depends_on`` order) that ended other than succeeded, else ``UNBLOCK``
    when every one succeeded, else None (one has not ended: it is missing from ``ends`` or
    still live)."""
    waiting = False
    for dependency in depends_on:
        state = ends.get(dependency)
        if state is None or not state.is_terminal:
            waiting = True
        elif state is not TaskState.SUCCEEDED:
            return Skip(dependency, state)
    return None if waiting else UNBLOCK


def apply_release(task: Task, release: Release, now: datetime) -> bool:
    """Give ``task`` the pending event of ``release`` if it is still blocked; False (no
    event) when it has moved on (cancelled, or released already)."""
    if task.state is not TaskState.BLOCKED:
        return False
    if isinstance(release, Unblock):
        task.unblock(now)
    else:
        task.skip(
            reason=f"dependency {release.dependency} ended {release.state}",
            dependency=release.dependency,
        )
    return True


def freed_by_successes(
    blocked: Iterable[tuple[UUID, Iterable[UUID]]], succeeded: Iterable[UUID]
) -> list[UUID]:
    """Of blocked tasks (each id with its dependencies), those ``release_of`` unblocks when
    only ``succeeded`` are known to have ended, sorted. A dependency that ended otherwise
    reads as not ended here: this never skips (the cascade does)."""
    ends = dict.fromkeys(succeeded, TaskState.SUCCEEDED)
    return sorted(
        task_id for task_id, depends_on in blocked if release_of(depends_on, ends) is UNBLOCK
    )


def unblock(tasks: Iterable[Task], now: datetime) -> list[Task]:
    """Those of ``tasks`` still blocked, given their ``TaskUnblocked``."""
    return [task for task in tasks if apply_release(task, UNBLOCK, now)]
