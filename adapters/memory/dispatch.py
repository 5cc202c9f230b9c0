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
PostgreSQL, the slots its outcomes free are taken by the next round). The rules of each step
are the domain's (``record_result``, ``record_timeout``, ``spawned_children``,
``notify_parents``, ``apply_release``, ``resolve_inputs``), as on PostgreSQL.

Running attempts are held here with their leases (the ``running_attempts`` table there);
an attempt whose task moved on in the store (cancelled, timed out by someone else) no
longer counts and is no longer held. Not modelled: rate limits and fair-key turns, worker
registration, the watchdog (``adapters/postgres/timeouts.py``), and the dependency
cascade's skips (``processors/dependency_cascade.py``); ``complete`` unblocks dependents
itself, which on PostgreSQL the cascade does a moment later.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from execution_ledger.adapters.memory.task_store import InMemoryTaskStore
from execution_ledger.domain.children import notify_parents, spawned_children
from execution_ledger.domain.dependencies import UNBLOCK, apply_release, release_of
from execution_ledger.domain.execution import AttemptOutcome, ClaimedAttempt
from execution_ledger.domain.inputs import resolve_inputs
from execution_ledger.domain.outcomes import record_result, record_timeout
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.task import Task, TaskState
from execution_ledger.domain.timeouts import TimeoutKind, Timeouts
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
            return self._with_inputs(self._start_due(set(queues), limit, worker, counted))

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
        """Each outcome's events, saved with the dependents its success unblocks."""
        if not outcomes:
            return
        now = self.clock()
        loaded = self.store.load_many([o.task_id for o in outcomes])
        ended: dict[UUID, Task] = {}
        spawned: list[Task] = []
        for outcome in outcomes:
            task = loaded.get(outcome.task_id)
            if task is None or not _runs(task, outcome.attempt):
                continue  # ended already (cancelled, timed out elsewhere, recorded twice)
            spawned.extend(self._end_attempt(task, outcome, now))
            ended[task.id] = task
            self.running.pop(task.id, None)
        tasks = [*ended.values(), *spawned]
        tasks += notify_parents(tasks, self.store.load_many)
        succeeded = [t.id for t in ended.values() if t.state is TaskState.SUCCEEDED]
        self.store.save(*tasks, *self._unblocked_by(succeeded, now))

    def _end_attempt(self, task: Task, outcome: AttemptOutcome, now: datetime) -> list[Task]:
        """Give ``task`` the events of its attempt's end; return the children it spawned."""
        if outcome.timed_out:
            record_timeout(task, TimeoutKind.START_TO_CLOSE, now, self.jitter())
            return []
        assert outcome.result is not None
        result = outcome.result
        children = spawned_children(self.registry, task, outcome.attempt, result, now, uuid4)
        if children is None:
            record_result(task, outcome.attempt, result, now, self.jitter())
            return []
        return children

    def _unblocked_by(self, succeeded: list[UUID], now: datetime) -> list[Task]:
        """The blocked tasks waiting on ``succeeded`` whose every dependency has now
        succeeded, with ``TaskUnblocked`` pending."""
        if not succeeded:
            return []
        just = set(succeeded)
        waiting = [
            task
            for _, task in self.store.live_tasks()
            if task.state is TaskState.BLOCKED and just & set(task.depends_on)
        ]
        others = {d for task in waiting for d in task.depends_on} - just
        ends = {
            task_id: TaskState.SUCCEEDED
            for task_id, task in self.store.load_many(sorted(others)).items()
            if task.state is TaskState.SUCCEEDED
        }
        ends.update(dict.fromkeys(just, TaskState.SUCCEEDED))
        return [
            task
            for task in waiting
            if release_of(task.depends_on, ends) == UNBLOCK and apply_release(task, UNBLOCK, now)
        ]

    # -- starting -----------------------------------------------------------------------

    def _start_due(
        self, queues: set[str], limit: int, worker: str, counted: list[Lease]
    ) -> list[tuple[Task, int]]:
        """Up to ``limit`` due tasks of ``queues`` within their queue's and lane's limits,
        the attempts ``counted`` taking their slots; started and saved."""
        now = self.clock()
        budgets = self._budgets(queues, counted)
        lanes = Counter(lease.lane for lease in counted if lease.lane is not None)
        started: list[tuple[Task, int]] = []
        for task in self._candidates(queues, now):
            if len(started) == limit:
                break
            if budgets[task.queue] <= 0:
                continue
            if task.lane is not None and lanes[task.lane] >= self.registry.lane_limit(task.lane):
                continue
            budgets[task.queue] -= 1
            if task.lane is not None:
                lanes[task.lane] += 1
            started.append((task, self._start(task, worker, now)))
        if started:
            self.store.save(*(task for task, _ in started))
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

    def _start(self, task: Task, worker: str, now: datetime) -> int:
        timeouts = Timeouts.from_dict(task.timeouts)
        heartbeat = timeouts.heartbeat or self.registry.default_timeouts.heartbeat or 30.0
        expires = now + timedelta(seconds=heartbeat)
        attempt = task.start(worker, expires, now, self.registry.version)
        self.running[task.id] = Lease(worker, attempt, task.queue, task.lane, heartbeat, expires)
        return attempt

    def _with_inputs(self, started: list[tuple[Task, int]]) -> list[ClaimedAttempt]:
        """The claimed attempts; a task taking its dependencies' results gets them (or the
        failure that ends its attempt instead)."""
        wanted = sorted({d for task, _ in started if task.inputs for d in task.inputs.values()})
        dependencies = self.store.load_many(wanted)
        claimed = []
        for task, attempt in started:
            one = _claimed(task, attempt)
            if task.inputs:
                limit = self.registry.workflows.max_input_bytes
                inputs, refused = resolve_inputs(task.inputs, dependencies, limit)
                one = dataclasses.replace(one, inputs=inputs, refused=refused)
            claimed.append(one)
        return claimed

    # -- leases -------------------------------------------------------------------------

    def _forget_moved_on(self) -> None:
        """Drop the leases of attempts whose task moved on in the store (a cancel, a
        timeout recorded elsewhere): on PostgreSQL those writes delete the rows."""
        loaded = self.store.load_many(list(self.running))
        for task_id, lease in list(self.running.items()):
            task = loaded.get(task_id)
            if task is None or not _runs(task, lease.attempt):
                del self.running[task_id]

    def _heartbeats(self, notes: Sequence[ProgressNote]) -> None:
        loaded = self.store.load_many([note.task_id for note in notes])
        beating = []
        for note in notes:
            task, lease = loaded.get(note.task_id), self.running[note.task_id]
            if task is None or task.attempts != note.attempt:
                continue
            task.heartbeat(note.attempt, lease.expires_at, note.progress, note.message)
            beating.append(task)
        if beating:
            self.store.save(*beating)


def _runs(task: Task, attempt: int) -> bool:
    """Whether ``attempt`` of ``task`` is still the one running."""
    return task.state is TaskState.RUNNING and task.attempts == attempt


def _claimed(task: Task, attempt: int) -> ClaimedAttempt:
    return ClaimedAttempt(
        task_id=task.id,
        attempt=attempt,
        type_name=task.type_name,
        adapter=task.adapter,
        args=task.args,
        adhoc_settings=task.adapter_settings,
        timeouts=Timeouts.from_dict(task.timeouts),
        queue=task.queue,
        lane=task.lane,
        trace=task.trace,
    )
