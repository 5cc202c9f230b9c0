"""Dependency cascade: unblock a task whose dependencies all succeeded, skip a task one of
whose dependencies ended other than succeeded (transitively, as each skip is an event too);
the rule and its events are ``domain/dependencies.py``'s.

It acts on the readiness graph's changes inside the graph's own transaction, so each change
becomes exactly one event. A change is acted on only if the task (and, for a skip, the
dependency) is still at the version the graph saw: when the store has moved on — a retry
followed the failure, or the graph is being rebuilt from history — nothing is appended.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from execution_ledger.domain.dependencies import UNBLOCK, Release, Skip, apply_release
from execution_ledger.domain.task import Task, TaskState
from execution_ledger.projections.readiness import Doomed, ReadinessChange, Unblocked


class TaskStore(Protocol):
    def latest_versions(self, task_ids: Sequence[UUID]) -> dict[UUID, int]: ...

    def load_many(self, task_ids: Sequence[UUID]) -> dict[UUID, Task]: ...


class DependencyCascade:
    def __init__(self, store: TaskStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    def react(self, changes: Sequence[ReadinessChange]) -> list[Task]:
        """Tasks with new pending events (unblocked or skipped) for ``changes``."""
        if not changes:
            return []
        ids = {c.task_id for c in changes} | {
            c.dependency for c in changes if isinstance(c, Doomed)
        }
        latest = self.store.latest_versions(sorted(ids))
        current = [c for c in changes if _still_current(c, latest)]
        loaded = self.store.load_many(sorted({c.task_id for c in current}))
        decided: dict[UUID, Task] = {}
        now = self.clock()
        for change in current:
            task = loaded[change.task_id]
            if change.task_id not in decided and apply_release(task, _release(change), now):
                decided[change.task_id] = task
        return list(decided.values())


def _release(change: ReadinessChange) -> Release:
    """The graph's change as the rule's decision (``domain/dependencies.py``): its count of
    pending dependencies reached 0 (all succeeded), or one ended otherwise."""
    if isinstance(change, Unblocked):
        return UNBLOCK
    return Skip(change.dependency, TaskState(change.dependency_state))


def _still_current(change: ReadinessChange, latest: dict[UUID, int]) -> bool:
    """The task (and for a skip, the dependency) is still at the version the graph saw."""
    if latest.get(change.task_id) != change.version:
        return False
    return (
        not isinstance(change, Doomed) or latest.get(change.dependency) == change.dependency_version
    )
