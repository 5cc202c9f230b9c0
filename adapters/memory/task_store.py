"""The task store in memory: a test double of ``adapters/postgres/event_store.py``'s
``EventStore`` honouring the same contract (``tests/contract/test_task_store_contract.py``).

It is the eventsourcing library's own in-memory ("POPO") persistence under the ledger's
application, so events go through the same mapper and transcoder as on PostgreSQL, a save
is all or nothing, and saving a stale copy of a task raises the library's
``IntegrityError``, as a version conflict does there. What it covers is what processors
and their callers use: ``save``, ``load``, ``load_many``, ``latest_versions`` (the
``TaskStore`` of ``processors/dependency_cascade.py``), and the queue aggregates whose
pause the in-memory dispatch honours. Not covered: log positions, projections, inline
statements, replicas.

``lock`` is held by the in-memory dispatch through a whole round, so a round sees and
writes the store as one transaction would.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application

from execution_ledger.domain.errors import TaskNotFound
from execution_ledger.domain.queue import Queue, queue_id
from execution_ledger.domain.task import Task

APPLICATION_NAME = "Ledger"  # as on PostgreSQL: the same mapper and topics


class _MemoryApplication(Application):
    name = APPLICATION_NAME


class InMemoryTaskStore:
    """Tasks (and queue aggregates) as events in memory, loaded by folding them."""

    def __init__(self) -> None:
        self.app = _MemoryApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.lock = threading.RLock()
        self._order: dict[UUID, int] = {}  # task id -> its place in enqueue order
        self._live: set[UUID] = set()  # tasks not ended: what a dispatch looks through

    # -- writing ------------------------------------------------------------------------

    def save(self, *aggregates: Task | Queue) -> None:
        """Append the pending events of ``aggregates``, all or none; a stale copy (its
        next version already stored) raises ``IntegrityError`` and nothing is stored."""
        with self.lock:
            self.app.save(*aggregates)
            for task in aggregates:
                if isinstance(task, Task):
                    self._order.setdefault(task.id, len(self._order))
                    if task.state.is_terminal:
                        self._live.discard(task.id)
                    else:
                        self._live.add(task.id)

    # -- reading ------------------------------------------------------------------------

    def load(self, task_id: UUID) -> Task:
        task = self._load_or_none(task_id)
        if not isinstance(task, Task):
            raise TaskNotFound(f"no task {task_id}")
        return task

    def load_many(self, task_ids: Sequence[UUID]) -> dict[UUID, Task]:
        """Several tasks; ids not found are left out."""
        found = {task_id: self._load_or_none(task_id) for task_id in task_ids}
        return {task_id: task for task_id, task in found.items() if isinstance(task, Task)}

    def latest_versions(self, task_ids: Sequence[UUID]) -> dict[UUID, int]:
        versions: dict[UUID, int] = {}
        for task_id in task_ids:
            last = self.app.recorder.select_events(task_id, desc=True, limit=1)
            if last:
                versions[task_id] = last[0].originator_version
        return versions

    def load_queue(self, name: str) -> Queue:
        """The queue's aggregate, registered (not yet saved) on first use."""
        queue = self._load_or_none(queue_id(name))
        return queue if isinstance(queue, Queue) else Queue.register(name)

    def live_tasks(self) -> list[tuple[int, Task]]:
        """The tasks not ended, each with its place in enqueue order, oldest first."""
        with self.lock:
            ids = sorted(self._live, key=self._order.__getitem__)
            loaded = self.load_many(ids)
        return [(self._order[task_id], loaded[task_id]) for task_id in ids]

    def _load_or_none(self, aggregate_id: UUID) -> object | None:
        try:
            return self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
