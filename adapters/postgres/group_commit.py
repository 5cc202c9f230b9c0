"""Group commit: concurrent saves of one process share one transaction.

Every way in that runs in threads (NATS ingress, cron, the Python API, the HTTP API's calls
that read before they save) saves through ``EventStore.save`` (a save of more than 500
events excepted: it streams in a transaction of its own, ``EventStore._save_streamed``);
the saves awaited on an event loop (the HTTP API's enqueue) have a group commit of their
own on the loop (``loop_commit.py``). A save becomes a ``SaveUnit`` handed to
``GroupCommit.submit``, which blocks its caller until the unit is committed or has failed.
The first caller that finds no commit in flight leads: it takes every unit queued so far
(its own among them) and commits them in one transaction; callers arriving meanwhile queue
up, and when the commit ends one of them leads the next batch. A lone save commits at once
(no timer, no wait for company); under load each commit carries everything that gathered
while the previous one ran.

Each caller gets its own outcome. When a batch's transaction fails (a version conflict, an
idempotency key already taken, any refused statement), the batch is committed again unit by
unit, each in its own transaction, so only the unit at fault sees the error — as it would
have without company. A lost connection fails the whole batch (each of its callers sees the
error, as a lone save would have).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eventsourcing.persistence import IntegrityError, StoredEvent

from execution_ledger.adapters.postgres.dispatch_queue import DispatchChange
from execution_ledger.adapters.postgres.recorder import Statement

MAX_BATCH_EVENTS = 512  # events in one batch's transaction (a unit is never split)


@dataclass
class SaveUnit:
    """One caller's save: its events (already mapped to stored form), the statements that
    must commit with them, its change of the dispatch queue (merged with the batch's into
    one statement), and, once done, their positions or the error it met."""

    stored: Sequence[StoredEvent]
    inline: Sequence[Statement]
    dispatch: DispatchChange = field(default_factory=DispatchChange)
    positions: list[int] = field(default_factory=list)  # set by the commit, in event order
    done: bool = False
    error: BaseException | None = None
    leads: bool = False  # handed the lead by the previous leader
    wake: threading.Event = field(default_factory=threading.Event, repr=False)

    def finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self.done = True
        self.wake.set()

    def lead(self) -> None:
        self.leads = True
        self.wake.set()


# Commits the units in one transaction and sets each unit's ``positions``; raises if the
# transaction failed.
CommitBatch = Callable[[Sequence[SaveUnit]], None]


class GroupCommit:
    """Leader/follower batching of ``SaveUnit``s over ``commit`` (one transaction for all
    the units it is given; raises if that transaction failed).

    Each waiting caller sleeps on its own unit's event and is woken once: when its unit is
    done, or when the leader hands it the lead (the first unit still queued after a commit).
    No caller is woken to find that nothing concerns it."""

    def __init__(self, commit: CommitBatch, max_batch_events: int = MAX_BATCH_EVENTS) -> None:
        self._commit = commit
        self._max_batch_events = max_batch_events
        self._queue: deque[SaveUnit] = deque()
        self._leading = False
        self._lock = threading.Lock()
        self.batches = 0  # committed transactions, for tests and metrics
        self.units = 0

    def submit(self, unit: SaveUnit) -> None:
        """Commit ``unit`` (with whatever else is queued); raise its own error if it failed."""
        with self._lock:
            self._queue.append(unit)
            if not self._leading:
                self._leading = unit.leads = True
        if not unit.leads:
            unit.wake.wait()
        if unit.leads:
            self._lead()
        if unit.error is not None:
            raise unit.error

    def _lead(self) -> None:
        """Commit the queued units, a batch: the leader's own unit among them; then the lead
        passes to the first unit still queued."""
        with self._lock:
            batch = take_batch(self._queue, self._max_batch_events)
        try:
            self._commit_with_fallback(batch)
        finally:
            with self._lock:
                following = self._queue[0] if self._queue else None
                self._leading = following is not None
        if following is not None:
            following.lead()

    def _commit_with_fallback(self, batch: list[SaveUnit]) -> None:
        try:
            self._commit(batch)
        except BaseException as error:
            if len(batch) == 1 or not unit_may_be_at_fault(error):
                for unit in batch:
                    unit.finish(error)
                return
            for unit in batch:  # one transaction each: only the unit at fault fails
                try:
                    self._commit([unit])
                except BaseException as own_error:
                    unit.finish(own_error)
                else:
                    self._committed([unit])
            return
        self._committed(batch)

    def _committed(self, batch: list[SaveUnit]) -> None:
        self.batches += 1
        self.units += len(batch)
        for unit in batch:
            unit.finish()


def take_batch(queue: deque[SaveUnit], max_events: int) -> list[SaveUnit]:
    """Take the next batch off ``queue``: units in order while their events fit in
    ``max_events`` (the first one always, however large)."""
    batch: list[SaveUnit] = []
    events = 0
    while queue:
        size = len(queue[0].stored)
        if batch and events + size > max_events:
            break
        batch.append(queue.popleft())
        events += size
    return batch


def unit_may_be_at_fault(error: BaseException) -> bool:
    """A refusal of one unit's rows (conflict, bad value) rather than a lost server."""
    from eventsourcing.persistence import (
        DataError,
        InternalError,
        NotSupportedError,
        ProgrammingError,
    )

    return isinstance(
        error, IntegrityError | DataError | InternalError | ProgrammingError | NotSupportedError
    )
