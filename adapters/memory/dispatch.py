"""The worker's side of the store in memory: a test double of
``adapters/postgres/dispatch.py``'s ``PostgresDispatch`` honouring the same contract
(``tests/contract/test_dispatch_contract.py``), for the ``Dispatch`` protocol the worker
loop sees (``processors/worker.py``).

A round (``claim``) holds the store's lock from start to end, so it reads and writes as one
transaction: it records the outcomes given (an outcome of an attempt that already ended is
dropped; one recorded twice counts once), unblocks the blocked tasks whose last dependency
just succeeded, then starts due tasks — highest priority first, then enqueue order; a lane
offers only its oldest due task; within each queue's concurrency (none while it is
paused) and each lane's limit, counting the attempts running when the round began (as on
PostgreSQL, the slots its outcomes free are taken by the next round). Every decision is
the one the PostgreSQL round takes, from the same pure rules (``domain/worker_round.py``:
``record_outcomes``, ``start_due``, ``record_progress``, ``with_inputs``;
``domain/dependencies.py``: ``freed_by_successes``, ``unblock``; ``notify_parents``):
what is its own here is only where things are kept and the order candidates are read in.

Running attempts are held here with their leases (the ``running_attempts`` table there);
an attempt whose task moved on in the store (cancelled, timed out by someone else) no
longer counts and is no longer held. Not modelled: rate limits and fair-key turns, worker
registration, the watchdog (``adapters/postgres/timeouts.py``), and the dependency
cascade's skips (``processors/dependency_cascade.py``); ``complete`` unblocks dependents
itself, which on PostgreSQL the cascade does a moment later.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from execution_ledger.adapters.memory.task_store import InMemoryTaskStore
from execution_ledger.domain.children import notify_parents
from execution_ledger.domain.dependencies import freed_by_successes, unblock
from execution_ledger.domain.execution import AttemptOutcome, ClaimedAttempt
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.task import Task, TaskState
from execution_ledger.domain.worker_round import (
    Start,
    claimed,
    inputs_wanted,
    record_outcomes,
    record_progress,
    start_due,
    still_runs,
    with_inputs,
)
from execution_ledger.processors.worker import ProgressNote


@dataclass
class Lease:
    """A running attempt, as the ``running_attempts`` table holds it on PostgreSQL."""

    worker: str
    attempt: int
    queue: str
    lane: str | None
    heartbeat: float
    expires_at: datetime


class InMemoryDispatch:
    def __init__(
        self,
        store: InMemoryTaskStore,
        registry: Registry,
        clock: Callable[[], datetime],
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.jitter = jitter
        self.running: dict[UUID, Lease] = {}

    # -- the protocol -------------------------------------------------------------------

    def claim(
        self,
        queues: Sequence[str],
        limit: int,
        worker: str,
        outcomes: Sequence[AttemptOutcome] = (),
    ) -> list[ClaimedAttempt]:
        """Record ``outcomes`` and start up to ``limit`` due tasks of ``queues`` for
        ``worker``, as one round."""
        with self.store.lock:
            self._forget_moved_on()
            counted = list(self.running.values())  # as on PostgreSQL: the slots the
            self._record(outcomes)  # outcomes free are free from the next round on
            if limit <= 0:
                return []
            started = self._start_due(set(queues), limit, worker, counted)
            dependencies = self.store.load_many(sorted(inputs_wanted(started)))
            limit_bytes = self.registry.workflows.max_input_bytes
            return with_inputs([claimed(s) for s in started], started, dependencies, limit_bytes)

    def complete(self, outcomes: Sequence[AttemptOutcome]) -> None:
        """Record the outcomes (those of attempts already ended are dropped)."""
        with self.store.lock:
            self._forget_moved_on()
            self._record(outcomes)

    def renew(
        self, worker: str, held: Sequence[UUID], progress: Sequence[ProgressNote] = ()
    ) -> set[UUID]:
        """Extend the leases of ``worker``'s attempts; return those it still holds. A note
        of an attempt still held becomes its ``TaskHeartbeat``, with the new lease."""
        with self.store.lock:
            self._forget_moved_on()
            now = self.clock()
            kept: set[UUID] = set()
            for task_id in held:
                lease = self.running.get(task_id)
                if lease is not None and lease.worker == worker:
                    lease.expires_at = now + timedelta(seconds=lease.heartbeat)
                    kept.add(task_id)
            self._heartbeats([note for note in progress if note.task_id in kept])
            return kept

    def next_due(self, queues: Sequence[str]) -> datetime | None:
        """When the earliest scheduled task of ``queues`` comes due."""
        wanted = set(queues)
        times = [
            task.run_at
            for _, task in self.store.live_tasks()
            if task.queue in wanted and task.state is TaskState.SCHEDULED and task.run_at
        ]
        return min(times, default=None)

    # -- recording outcomes -------------------------------------------------------------

    def _record(self, outcomes: Sequence[AttemptOutcome]) -> None:
        """Each outcome's events, saved with the parents they notify and the dependents
        its success unblocks; outcomes of attempts that already ended are dropped."""
        if not outcomes:
            return
        now = self.clock()
        loaded = self.store.load_many([o.task_id for o in outcomes])
        known = [o for o in outcomes if o.task_id in loaded]
        changed, _ = record_outcomes(known, loaded, self.registry, now, self.jitter)
        ended = {o.task_id for o in known} & {task.id for task in changed}
        for task_id in ended:
            self.running.pop(task_id, None)
        changed += notify_parents(changed, self.store.load_many)
        succeeded = [t.id for t in changed if t.state is TaskState.SUCCEEDED]  # parents too
        self.store.save(*changed, *self._unblocked_by(succeeded, now))

    def _unblocked_by(self, succeeded: list[UUID], now: datetime) -> list[Task]:
        """The blocked tasks waiting on ``succeeded`` whose every dependency has now
        succeeded, with ``TaskUnblocked`` pending."""
        if not succeeded:
            return []
        just = set(succeeded)
        waiting = {
            task.id: task
            for _, task in self.store.live_tasks()
            if task.state is TaskState.BLOCKED and just & set(task.depends_on)
        }
        others = {d for task in waiting.values() for d in task.depends_on} - just
        done = just | {
            task_id
            for task_id, task in self.store.load_many(sorted(others)).items()
            if task.state is TaskState.SUCCEEDED
        }
        blocked = [(task.id, task.depends_on) for task in waiting.values()]
        return unblock([waiting[i] for i in freed_by_successes(blocked, done)], now)

    # -- starting -----------------------------------------------------------------------

    def _start_due(
        self, queues: set[str], limit: int, worker: str, counted: list[Lease]
    ) -> list[Start]:
        """Up to ``limit`` due tasks of ``queues`` within their queue's and lane's limits,
        the attempts ``counted`` taking their slots; started and saved."""
        now = self.clock()
        budgets = self._budgets(queues, counted)
        lanes = Counter(lease.lane for lease in counted if lease.lane is not None)
        chosen: list[Task] = []
        for task in self._candidates(queues, now):
            if len(chosen) == limit:
                break
            if budgets[task.queue] <= 0:
                continue
            if task.lane is not None and lanes[task.lane] >= self.registry.lane_limit(task.lane):
                continue
            budgets[task.queue] -= 1
            if task.lane is not None:
                lanes[task.lane] += 1
            chosen.append(task)
        started = start_due(chosen, worker, now, self.registry)
        for s in started:
            expires = now + timedelta(seconds=s.heartbeat)
            self.running[s.task.id] = Lease(
                worker, s.attempt, s.task.queue, s.task.lane, s.heartbeat, expires
            )
        if started:
            self.store.save(*(s.task for s in started))
        return started

    def _budgets(self, queues: set[str], counted: list[Lease]) -> dict[str, int]:
        """Attempts each queue may still start: its concurrency less its attempts
        ``counted`` (0 while it is paused)."""
        running = Counter(lease.queue for lease in counted)
        return {
            queue: 0
            if self.store.load_queue(queue).paused
            else self.registry.queue(queue).concurrency - running[queue]
            for queue in queues
        }

    def _candidates(self, queues: set[str], now: datetime) -> list[Task]:
        """Due tasks of ``queues``, highest priority first, then enqueue order; a lane
        offers only its oldest due task (of any queue, whatever its priority)."""
        due = [(seq, task) for seq, task in self.store.live_tasks() if task.is_due(now)]
        heads: dict[str, UUID] = {}
        for _, task in due:  # oldest first
            if task.lane is not None:
                heads.setdefault(task.lane, task.id)
        offered = [
            (seq, task)
            for seq, task in due
            if task.queue in queues and (task.lane is None or heads[task.lane] == task.id)
        ]
        offered.sort(key=lambda entry: (-entry[1].priority, entry[0]))
        return [task for _, task in offered]

    # -- leases -------------------------------------------------------------------------

    def _forget_moved_on(self) -> None:
        """Drop the leases of attempts whose task moved on in the store (a cancel, a
        timeout recorded elsewhere): on PostgreSQL those writes delete the rows."""
        loaded = self.store.load_many(list(self.running))
        for task_id, lease in list(self.running.items()):
            task = loaded.get(task_id)
            if task is None or not still_runs(task, lease.attempt):
                del self.running[task_id]

    def _heartbeats(self, notes: Sequence[ProgressNote]) -> None:
        """A ``TaskHeartbeat`` per note whose attempt still runs, with its new lease."""
        loaded = self.store.load_many([note.task_id for note in notes])
        beating = [
            loaded[note.task_id]
            for note in notes
            if note.task_id in loaded
            and record_progress(
                loaded[note.task_id],
                note.attempt,
                self.running[note.task_id].expires_at,
                note.progress,
                note.message,
            )
        ]
        if beating:
            self.store.save(*beating)
