"""Claiming, completing and renewing attempts on PostgreSQL: the worker's side of the store.

A claim is one transaction: per-queue advisory locks (so queue and lane limits hold across
all worker nodes), candidates from the dispatch queue (``dispatch_queue.py``, written with
the events, so a task is claimable as soon as it is ready) taken ``FOR UPDATE SKIP LOCKED``
(so concurrent claimers spread out), a ``TaskStarted`` per task appended at the task's next
version (optimistic concurrency: two nodes never start the same attempt), and a
``running_attempts`` row per attempt — all committed together.

A worker round records the outcomes of the attempts that ended since its last round in that
same transaction (``claim(..., outcomes)``): one lock of the events table and one commit per
round. The dependents those successes free are unblocked in it too (``inline_unblock.py``).

The reads of a claim go in one round trip (pipeline mode, ``candidates.py``): the queue
locks, then the budgets and the candidates with their stored events, each a statement that
starts after the locks are held, so it sees every claim committed before it. When rate
limits cover the candidates (``rate_limits.py``), one more round trip locks and counts their
buckets; the round's starts and holds go with its commit.

What the round decides (an outcome dropped or recorded, a task started, a dependent started
without reading its queue again, a second read) is ``domain/worker_round.py``'s; this
module holds the locks, the transaction and the statements. A transaction that meets a
concurrent write is tried again through ``concurrent_write.retry_on_conflict``.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError
from psycopg import sql

from execution_ledger.adapters.postgres.candidates import (
    SPARE_CANDIDATES,
    CandidateReader,
    QueueReading,
)
from execution_ledger.adapters.postgres.concurrent_write import KeptChanging, retry_on_conflict
from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.inline_unblock import InlineUnblock
from execution_ledger.adapters.postgres.rate_limits import ClaimRateLimits, RoundRates
from execution_ledger.adapters.postgres.recorder import Statement
from execution_ledger.adapters.postgres.running import RunningTables, StartedAttempt
from execution_ledger.domain.children import notify_parents
from execution_ledger.domain.execution import AttemptOutcome, ClaimedAttempt
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.task import Task, TaskState
from execution_ledger.domain.worker_round import (
    Start,
    claimed,
    direct_starts,
    inputs_wanted,
    reads_again,
    record_outcomes,
    record_progress,
    start_attempt,
    start_due,
    with_inputs,
)
from execution_ledger.processors.worker import ProgressNote

log = logging.getLogger(__name__)


class PostgresDispatch:
    def __init__(
        self,
        store: EventStore,
        registry: Registry,
        clock: Callable[[], datetime],
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.jitter = jitter
        self.tables = RunningTables(store.schema)
        self.unblock = InlineUnblock(store)
        self.queue_table = store.dispatch_queue.table
        self._sql_next_due = (
            sql.SQL(
                "SELECT min(run_at) AS due FROM {} WHERE queue = ANY(%s) AND state = 'scheduled'"
            )
            .format(self.queue_table)
            .as_string(None)
        )
        self.candidates = CandidateReader(store, registry, self.tables)
        self.rate_limits = ClaimRateLimits(store.schema, lambda: self.registry, self.queue_table)
        # Tasks as this process started them: completing them needs no reload unless
        # something else wrote to them meanwhile (then the save conflicts and we reload).
        self._started: dict[UUID, Task] = {}
        self._started_lock = threading.Lock()
        # Queues seen paused by the last claim that read them: a ready notice naming only
        # such queues need not wake this worker (a resume notifies with no names).
        self.paused: frozenset[str] = frozenset()

    # -- claiming -----------------------------------------------------------------------

    def claim(
        self,
        queues: Sequence[str],
        limit: int,
        worker: str,
        outcomes: Sequence[AttemptOutcome] = (),
    ) -> list[ClaimedAttempt]:
        """Record ``outcomes`` and start up to ``limit`` due tasks of ``queues`` for
        ``worker``, in one transaction (one commit).

        If that transaction meets a concurrent write (a task cancelled or timed out
        meanwhile), the outcomes are recorded on their own (``complete``) and the claim is
        made again without them; a claim that keeps meeting one claims nothing this round.
        A queue read under a shared lock that no longer sufficed (``candidates.py``) is
        claimed again after the commit, under the exclusive lock.
        """
        queue_list = sorted(set(queues))
        missed: set[str] = set()
        claimed: list[ClaimedAttempt] | None = None
        if outcomes:
            try:
                claimed = self._claim_once(queue_list, limit, worker, missed, outcomes)
            except IntegrityError:
                # Not retried as it was: each outcome is recorded apart (reloaded, retried
                # on its own), so one that lost a race does not hold back the others.
                log.debug("claim with outcomes met a concurrent write; recording them apart")
                self._complete_one_by_one(outcomes)
        if claimed is None:
            try:
                claimed = self._claim_apart(queue_list, limit, worker, missed)
            except KeptChanging:
                return []
        return claimed + self._claim_missed(missed, limit - len(claimed), worker)

    def _claim_apart(
        self, queues: list[str], limit: int, worker: str, missed: set[str]
    ) -> list[ClaimedAttempt]:
        """A claim with no outcomes, made again while it meets a concurrent write."""
        return retry_on_conflict(
            partial(self._claim_once, queues, limit, worker, missed),
            what="the claim",
            on_conflict=_claim_conflicted,
        )

    def _claim_missed(self, missed: set[str], limit: int, worker: str) -> list[ClaimedAttempt]:
        """The queues a round read under a shared lock that no longer sufficed
        (``candidates.py``), claimed again: their next lock is exclusive."""
        if not missed or limit <= 0:
            return []
        log.debug("queues %s are within reach of their limit: claiming them again", missed)
        try:
            return self._claim_apart(sorted(missed), limit, worker, set())
        except KeptChanging:
            return []

    def _claim_once(
        self,
        queues: list[str],
        limit: int,
        worker: str,
        missed: set[str],
        outcomes: Sequence[AttemptOutcome] = (),
    ) -> list[ClaimedAttempt]:
        """One round's transaction; then, once it committed, what its rate-limit checks
        learned (buckets left full, holds written) is remembered. ``missed`` gathers the
        queues it read under a shared lock that did not suffice."""
        rate_rounds: list[tuple[RoundRates, list[UUID]]] = []
        attempts = self._claim_round(queues, limit, worker, outcomes, rate_rounds, missed)
        for rates, started_ids in rate_rounds:
            self.rate_limits.committed(rates, started_ids)
        return attempts

    def _claim_round(
        self,
        queues: list[str],
        limit: int,
        worker: str,
        outcomes: Sequence[AttemptOutcome],
        rate_rounds: list[tuple[RoundRates, list[UUID]]],
        missed: set[str],
    ) -> list[ClaimedAttempt]:
        ended = self._record_outcomes(outcomes, self._take_started(outcomes)) if outcomes else []
        # The ended attempts' rows go before the claim counts its budgets: the slots they
        # free are taken by this round, and its ready notice need not wake this worker.
        freed = [self.tables.attempts_ended([task.id for task in ended])] if ended else []
        inline: list[Statement] = [] if limit > 0 else freed
        started: list[Start] = []
        succeeded = [task.id for task in ended if task.state is TaskState.SUCCEEDED]
        with self.store.pipelined_transaction() as cur:
            # One round trip for BEGIN, the dependents' look-up and the claim's reads.
            dependents = self.unblock.look_up(cur.connection, succeeded)
            reading = None
            if limit > 0:
                started, reading = self._start_due(
                    cur, queues, limit, worker, rate_rounds, first=freed
                )
                missed.update(reading.missed)
            unblocked = self.unblock.unblocked_by(cur, dependents, succeeded, self.clock())
            if reading is not None and unblocked:
                started += self._start_unblocked(unblocked, reading, started, limit, worker)
            if not ended and not started:
                return []
            if started:
                inline.append(self._running_rows(started, worker))
            also_unblocked = {task.id for task in unblocked}
            tasks = [
                *ended,
                *unblocked,
                *(start.task for start in started if start.task.id not in also_unblocked),
            ]
            self.store.append_in(
                cur,
                tasks,
                inline,
                positions=False,
                sender=worker,
                unbound=self.candidates.unbound,
            )
            if reads_again(unblocked, len(started), limit):
                # The queue locks are held since the first read (only in rounds that
                # unblock something). Not the queues just missed: their lock is not taken
                # again, exclusive, while this transaction holds it shared.
                more, again = self._start_due(
                    cur,
                    [queue for queue in queues if queue not in missed],
                    limit - len(started),
                    worker,
                    rate_rounds,
                )
                missed.update(again.missed)
                if more:
                    self.store.append_in(
                        cur,
                        [start.task for start in more],
                        [self._running_rows(more, worker)],
                        positions=False,
                        sender=worker,
                    )
                    started += more
        with self._started_lock:
            self._started.update((start.task.id, start.task) for start in started)
        return self._with_inputs([claimed(start) for start in started], started)

    def _with_inputs(
        self, attempts: list[ClaimedAttempt], started: list[Start]
    ) -> list[ClaimedAttempt]:
        """Resolve the inputs of the attempts whose tasks take their dependencies' results,
        from the dependencies folded from the log (only for those: others cost nothing)."""
        wanted = inputs_wanted(started)
        if not wanted:
            return attempts
        dependencies = self.store.load_many(sorted(wanted))
        return with_inputs(
            attempts, started, dependencies, self.registry.workflows.max_input_bytes
        )

    def _start_due(
        self,
        cur: psycopg.Cursor[Any],
        queues: list[str],
        limit: int,
        worker: str,
        rate_rounds: list[tuple[RoundRates, list[UUID]]],
        first: Sequence[Statement] = (),
    ) -> tuple[list[Start], QueueReading]:
        """Up to ``limit`` due tasks within their queue, lane and rate limits, each started
        (its ``TaskStarted`` pending, not yet saved); and what was read of the queues
        (``first``: statements run once the queues are locked, before the read)."""
        passed_over = self.rate_limits.full_fair_keys(queues, self.clock())
        rate_limited = [queue for queue in queues if self._rate_limited(queue)]
        reading = self.candidates.read(
            cur, queues, limit + SPARE_CANDIDATES, worker, passed_over, first, rate_limited
        )
        self.paused = (self.paused - set(queues)) | reading.paused
        now = self.clock()
        rates, loaded = self._round_rates(cur, queues, reading, now)
        chosen = self.candidates.within_limits(
            cur, reading.candidates, reading.budgets, limit, rates
        )
        if loaded is None:
            loaded = self.store.fold(row for c in chosen for row in reading.events[c.task_id])
        started = start_due(
            (loaded[c.task_id] for c in chosen if c.task_id in loaded), worker, now, self.registry
        )
        if rates is not None:
            started_ids = [start.task.id for start in started]
            for candidate in chosen:
                if candidate.task_id not in started_ids:
                    rates.release(candidate.task_id)
            self.rate_limits.record(cur, rates, started_ids)
            rate_rounds.append((rates, started_ids))
        return started, reading

    def _round_rates(
        self, cur: psycopg.Cursor[Any], queues: list[str], reading: QueueReading, now: datetime
    ) -> tuple[RoundRates | None, dict[UUID, Task] | None]:
        """The rate-limit buckets of the candidates, locked and counted (None when no limit
        covers them: no fold ahead of the choice, no round trip); and the candidates folded
        to find them."""
        if not reading.candidates or not self.rate_limits.active_for(queues):
            return None, None
        loaded = self.store.fold(
            row for c in reading.candidates for row in reading.events[c.task_id]
        )
        buckets = {
            task_id: found
            for task_id, task in loaded.items()
            if (found := self.rate_limits.buckets_of(task))
        }
        if not buckets:
            return None, loaded
        return self.rate_limits.read(cur, buckets, now), loaded

    def _start_unblocked(
        self,
        unblocked: list[Task],
        reading: QueueReading,
        started: list[Start],
        limit: int,
        worker: str,
    ) -> list[Start]:
        """Start the dependents just unblocked that ``direct_starts`` lets the round start
        without reading the queues again."""
        now = self.clock()
        direct = direct_starts(
            unblocked, started, limit, reading.exhausted, reading.budgets, self._rate_limited, now
        )
        return [start_attempt(task, worker, now, self.registry) for task in direct]

    def _rate_limited(self, queue: str) -> bool:
        return self.rate_limits.active_for([queue])

    def _running_rows(self, started: list[Start], worker: str) -> Statement:
        rows = [
            StartedAttempt(
                s.task.id,
                s.attempt,
                s.task.queue,
                s.task.lane,
                s.heartbeat,
                s.timeouts.start_to_close,
            )
            for s in started
        ]
        return self.tables.attempts_started(rows, worker, self.clock())

    # -- completing ---------------------------------------------------------------------

    def complete(self, outcomes: Sequence[AttemptOutcome]) -> None:
        """Record the outcomes; several in one transaction when they do not conflict."""
        try:
            self._save_outcomes(outcomes, self._take_started(outcomes))
        except IntegrityError:
            # One of them met a concurrent write: not retried together, but each reloaded
            # and recorded on its own (retried there), so the others are not held back.
            self._complete_one_by_one(outcomes)

    def _complete_one_by_one(self, outcomes: Sequence[AttemptOutcome]) -> None:
        for outcome in outcomes:
            try:
                retry_on_conflict(
                    partial(self._save_outcomes, [outcome], {}),
                    what=f"task {outcome.task_id}",
                )
            except KeptChanging:
                log.warning(
                    "outcome of attempt %s of task %s kept conflicting; the lease will expire "
                    "and the watchdog will time the attempt out",
                    outcome.attempt,
                    outcome.task_id,
                )

    def _take_started(self, outcomes: Sequence[AttemptOutcome]) -> dict[UUID, Task]:
        with self._started_lock:
            taken = {o.task_id: self._started.pop(o.task_id, None) for o in outcomes}
        return {task_id: task for task_id, task in taken.items() if task is not None}

    def _save_outcomes(self, outcomes: Sequence[AttemptOutcome], known: dict[UUID, Task]) -> None:
        tasks = self._record_outcomes(outcomes, known)
        if tasks:
            self.store.save(*tasks, inline=[self.tables.attempts_ended([t.id for t in tasks])])

    def _record_outcomes(
        self, outcomes: Sequence[AttemptOutcome], known: dict[UUID, Task]
    ) -> list[Task]:
        """The tasks with the events of their outcomes pending (not yet saved), and the
        waiting parents their ends decide; outcomes of attempts that already ended
        (cancelled, timed out elsewhere) are dropped."""
        loaded = dict(known)
        loaded.update(self.store.load_many([o.task_id for o in outcomes if o.task_id not in known]))
        tasks, dropped = record_outcomes(
            outcomes, loaded, self.registry, self.clock(), self.jitter
        )
        for outcome in dropped:
            log.info(
                "attempt %s of %s already ended; its outcome is dropped",
                outcome.attempt,
                outcome.task_id,
            )
        tasks.extend(notify_parents(tasks, self.store.load_many))
        return tasks

    # -- leases and workers -------------------------------------------------------------

    def renew(
        self, worker: str, held: Sequence[UUID], progress: Sequence[ProgressNote] = ()
    ) -> set[UUID]:
        """Extend the leases of ``worker``'s attempts; return those it still holds.
        ``progress`` (what task code reported, already coalesced by the worker) becomes a
        ``TaskHeartbeat`` per attempt still held, with its new lease."""
        renewed = self.tables.leases_renewed(worker, held)
        seen = self.tables.worker_seen(worker)
        with self.store.transaction() as cur:
            cur.execute(renewed.query, renewed.params)
            leases = {row["task_id"]: row["lease_expires_at"] for row in cur.fetchall()}
            kept = set(leases)
            cur.execute(seen.query, seen.params)
        with self._started_lock:  # attempts ended elsewhere (cancel, watchdog) leave the cache
            for task_id in [t for t in self._started if t not in kept]:
                del self._started[task_id]
        notes = [note for note in progress if note.task_id in leases]
        if notes:
            self._heartbeats(notes, leases)
        return kept

    def _heartbeats(self, notes: Sequence[ProgressNote], leases: dict[UUID, datetime]) -> None:
        """One ``TaskHeartbeat`` per note whose attempt still runs; one that meets a
        concurrent write (its outcome, a cancel) is dropped: the next note carries on."""
        with self._started_lock:  # their cached versions are about to be stale
            for note in notes:
                self._started.pop(note.task_id, None)
        loaded = self.store.load_many([note.task_id for note in notes])
        for note in notes:
            task = loaded.get(note.task_id)
            lease = leases[note.task_id]
            if task is None or not record_progress(
                task, note.attempt, lease, note.progress, note.message
            ):
                continue
            try:
                self.store.save(task)
            except IntegrityError:  # not retried: a newer note, or the outcome, follows
                log.debug("heartbeat of %s met a concurrent write; dropped", note.task_id)

    def register_worker(
        self, worker: str, host: str, pid: int, queues: Sequence[str], concurrency: int
    ) -> None:
        registered = self.tables.worker_registered(worker, host, pid, queues, concurrency)
        with self.store.transaction() as cur:
            cur.execute(registered.query, registered.params)

    def next_due(self, queues: Sequence[str]) -> datetime | None:
        """When the earliest scheduled task of ``queues`` comes due."""
        with self.store.transaction() as cur:
            row = cur.execute(self._sql_next_due, (list(queues),)).fetchone()
        return row["due"] if row else None


def _claim_conflicted(attempt: int) -> None:
    log.debug("claim met a concurrent write (try %s); claiming again", attempt)
