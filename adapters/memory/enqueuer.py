"""Enqueueing in memory: a test double of ``Ledger.enqueue_once`` / ``enqueue_graph``
(``adapters/ledger.py``) honouring the same contract
(``tests/contract/test_enqueuer_contract.py``), for the ``Enqueuer`` protocol of
``processors/cron.py``.

Requests are planned by the domain (``plan_tasks``: the registry's types, queues,
timeouts, retry policy) and saved to an ``InMemoryTaskStore``. An idempotency key names one
task for as long as it is taken (for ever, or ``idempotency_period`` seconds): enqueueing it
again gives that task back, not a new one. Coalescing (singleton and debounce keys) is not
modelled: a request that would coalesce is refused with ``NotImplementedError``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from execution_ledger.adapters.memory.task_store import InMemoryTaskStore
from execution_ledger.domain.errors import IdempotencyKeyTaken
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.submission import (
    Requester,
    SubmissionContext,
    TaskRequest,
    plan_tasks,
    stored_states,
)
from execution_ledger.domain.task import Task

SYSTEM = Requester(principal="system", role="admin")  # as ``adapters/ledger.py``'s


class InMemoryEnqueuer:
    def __init__(
        self,
        store: InMemoryTaskStore,
        registry: Registry,
        clock: Callable[[], datetime],
        new_id: Callable[[], UUID] = uuid4,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.new_id = new_id
        self._keys: dict[str, tuple[UUID, datetime | None]] = {}  # key -> holder, expiry
        self._lock = threading.Lock()

    def enqueue(self, request: TaskRequest, requester: Requester = SYSTEM) -> Task:
        return self.enqueue_once(request, requester)[0]

    def enqueue_once(
        self, request: TaskRequest, requester: Requester = SYSTEM
    ) -> tuple[Task, bool]:
        """The task and True if it was created; the key's holder and False if not."""
        with self._lock:
            key = request.idempotency_key
            holder = self._holder(key) if key is not None else None
            if holder is not None:
                return self.store.load(holder), False
            return self._enqueue([request], requester)[0], True

    def enqueue_graph(
        self, requests: Sequence[TaskRequest], requester: Requester = SYSTEM
    ) -> list[Task]:
        """Store all tasks, or none: refs name tasks of the same call; a key already
        taken is refused (``IdempotencyKeyTaken``)."""
        with self._lock:
            for request in requests:
                key = request.idempotency_key
                if key is not None and self._holder(key) is not None:
                    raise IdempotencyKeyTaken(f"idempotency key {key!r} is held by a task")
            return self._enqueue(requests, requester)

    def _enqueue(self, requests: Sequence[TaskRequest], requester: Requester) -> list[Task]:
        now = self.clock()
        context = SubmissionContext(self.registry, requester, now, self.new_id)
        graph_id = self.new_id() if len(requests) > 1 else None
        tasks = plan_tasks(context, requests, stored_states(requests, self.store.load), graph_id)
        keys = [r.idempotency_key for r in requests if r.idempotency_key is not None]
        if len(set(keys)) != len(keys):
            raise IdempotencyKeyTaken("an idempotency key is named twice in this submission")
        if any(t.singleton_key is not None or t.debounce_key is not None for t in tasks):
            raise NotImplementedError("the in-memory enqueuer does not coalesce tasks")
        self.store.save(*tasks)
        periods = {r.idempotency_key: r.idempotency_period for r in requests}
        for task in tasks:
            if task.idempotency_key is not None:
                period = periods.get(task.idempotency_key)
                expires = None if period is None else now + timedelta(seconds=period)
                self._keys[task.idempotency_key] = (task.id, expires)
        return tasks

    def _holder(self, key: str) -> UUID | None:
        held = self._keys.get(key)
        if held is None or (held[1] is not None and held[1] <= self.clock()):
            return None
        return held[0]

