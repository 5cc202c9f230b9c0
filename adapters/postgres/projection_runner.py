"""Runs one projection over the event log with exactly-once tracking.

Each batch of events is applied in one transaction that also moves the projection's
recorded position (``projection_positions``), after checking under a row lock that the
position is still the one the batch started from. A reactor (e.g. the dependency cascade)
may append new events in that same transaction. Reads stop at the log's horizon
(``log_horizon.py``), so reading ``position > last`` never skips an event that commits
later with a smaller position.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import psycopg
from psycopg import sql

from execution_ledger.adapters.postgres.concurrent_write import AGAIN, Again, retry_on_conflict
from execution_ledger.adapters.postgres.event_store import EVENTS_TABLE, EventStore
from execution_ledger.domain.task import Task
from execution_ledger.projections.audit_chain import UndecodableEvent
from execution_ledger.projections.base import Projection, drop_tables

POSITIONS_TABLE = "projection_positions"
REBUILD_SUFFIX = ":rebuild"  # the advisory lock a rebuild holds while it runs
REBUILD_NOTICE = "rebuild "  # NOTIFY payload on the log's channel, + schema.projection
REBUILD_POLL = 0.2  # seconds between a paused runner's looks at the rebuild lock
log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (position reached, head position)


class Reactor(Protocol):
    def react(self, changes: Sequence[Any]) -> list[Task]: ...


class ProjectionBusy(RuntimeError):
    """Another process is running this projection right now."""


class ProjectionRunner:
    def __init__(
        self,
        store: EventStore,
        projection: Projection,
        reactor: Reactor | None = None,
        batch_size: int = 500,
    ) -> None:
        self.store = store
        self.projection = projection
        self.reactor = reactor
        self._last_applied: int | None = None  # where this instance's last batch ended
        self.positions = positions = sql.Identifier(store.schema, POSITIONS_TABLE)
        self._sql_register = _compose(
            "INSERT INTO {} (name, position) VALUES (%s, 0) ON CONFLICT DO NOTHING", positions
        )
        self._sql_read = _compose("SELECT position FROM {} WHERE name = %s", positions)
        self._sql_lock = _compose("SELECT position FROM {} WHERE name = %s FOR UPDATE", positions)
        self._sql_advance = _compose("UPDATE {} SET position = %s WHERE name = %s", positions)
        self.batch_size = batch_size

    # -- position -----------------------------------------------------------------------

    def position(self) -> int:
        with self.store.transaction() as cursor:
            return self._locked_position(cursor, lock=False)

    def _locked_position(self, cursor: psycopg.Cursor[Any], lock: bool = True) -> int:
        query = self._sql_lock if lock else self._sql_read
        row = cursor.execute(query, (self.projection.name,)).fetchone()
        if row is None:  # first use: register (another thread may be doing it too)
            cursor.execute(self._sql_register, (self.projection.name,))
            row = cursor.execute(query, (self.projection.name,)).fetchone()
        assert row is not None
        return int(row["position"])

    # -- catching up --------------------------------------------------------------------

    def run_batch(self, until: int | None = None) -> int:
        """Apply the next batch of events; return how many were applied (0: up to date).
        A batch whose reactor's append met a concurrent write was rolled back whole, and one
        another process applied first is read on from where it left off: both try again
        (``retry_on_conflict``)."""

        def read_and_apply() -> int | Again:
            # Where this instance's last batch ended, if known (checked again under lock).
            start = self._last_applied if self._last_applied is not None else self.position()
            events = self._read_tolerating_undecodable(start, until)
            if not events:
                return 0
            applied = self._apply_batch(start, events)
            if applied is None:
                self._last_applied = None
                return AGAIN
            return applied

        def conflicted(attempt: int) -> None:
            log.info("projection %s: batch conflict, retrying (%d)", self.projection.name, attempt)

        return retry_on_conflict(
            read_and_apply,
            what=f"the batch of projection {self.projection.name}",
            on_conflict=conflicted,
        )

    def _read_tolerating_undecodable(self, start: int, until: int | None) -> list[Any]:
        """The next batch of the log. A stored row whose event does not decode (a topic
        that does not resolve, a state that does not parse) does not stop the projection:
        ``EventStore.read`` hands it on as an ``UndecodableEvent`` at its position, and this
        warns naming the projection. The audit chain chains it by its stored bytes; the
        other projections pass over it (it is no task event), and the position moves past
        it."""
        events = self.store.read(start, self.batch_size, until)
        for recorded in events:
            if isinstance(recorded.event, UndecodableEvent):
                then = (
                    "chained by its stored bytes"
                    if getattr(self.projection, "takes_undecodable", False)
                    else "skipped"
                )
                log.warning(
                    "projection %s: the event at position %d does not decode (%s); %s",
                    self.projection.name,
                    recorded.position,
                    recorded.event.error,
                    then,
                )
        return events

    def _apply_batch(self, start: int, events: Sequence[Any]) -> int | None:
        """Apply ``events`` if the position is still ``start``; None if it moved."""
        # Pipeline mode, BEGIN and COMMIT included (``one_trip.py``): a round trip for the
        # position's lock, one more only where a projection or the reactor reads a result.
        with self.store.pipelined_transaction() as cursor:
            if self._locked_position(cursor) != start:
                return None
            if start != self._last_applied:
                _forget(self.projection)  # events were applied elsewhere: drop shortcuts
            changes = self._apply_events(cursor, events)
            if self.reactor is not None and changes:
                appended = self.store.append_in(cursor, self.reactor.react(changes))
                # Fold our own new events in now, so a task this batch unblocks is ready at
                # commit, not one batch later; reading them again later changes nothing
                # (the projection's handling of the reactor's events is idempotent).
                self._apply_events(cursor, appended)
            cursor.execute(self._sql_advance, (events[-1].position, self.projection.name))
        self._last_applied = events[-1].position
        return len(events)

    def _apply_events(self, cursor: psycopg.Cursor[Any], events: Sequence[Any]) -> list[Any]:
        """Apply recorded events in log order; a projection with ``apply_batch`` takes them
        all at once (it may fold several events into one statement)."""
        apply_batch = getattr(self.projection, "apply_batch", None)
        if apply_batch is not None:
            return list(apply_batch(cursor, [(r.event, r.position) for r in events]))
        changes: list[Any] = []
        for recorded in events:
            changes.extend(self.projection.apply(cursor, recorded.event, recorded.position))
        return changes

    def catch_up(
        self,
        until: int | None = None,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ) -> int:
        """Apply events until the head of the log (or ``until``, or ``stop`` is set between
        two batches); return how many."""
        total = 0
        head = 0  # only a progress report needs the head (a look at the log's horizon)
        if progress is not None:
            head = until if until is not None else self.store.head_position()
        while stop is None or not stop.is_set():
            applied = self.run_batch(until)
            if applied == 0:
                return total
            total += applied
            if progress is not None:
                progress(self.position(), max(head, self.position()))
        return total

    def _catch_up_live(self, stop: threading.Event) -> None:
        """Apply batches until one comes back short: its read reached the log's horizon,
        so asking again at once would find nothing that has not also sent a notice (a
        commit notifies its listeners; a rolled-back writer is left to the poll). This
        saves the empty read (a round trip, a look at ``pg_locks``) after every batch."""
        while not stop.is_set():
            if self.run_batch() < self.batch_size:
                return

    # -- rebuild ------------------------------------------------------------------------

    def rebuild(self, progress: Progress | None = None, wait_seconds: float = 60) -> int:
        """Drop the tables, recreate them and replay the whole log.

        A runner following the log (in this process or another) is asked to let go first:
        the rebuild holds the projection's rebuild lock and sends ``REBUILD_NOTICE`` on the
        log's channel; the runner finishes its batch, releases the projection's lock and
        waits until the rebuild lock is free, then follows the log again. ``ProjectionBusy``
        if the projection is still held after ``wait_seconds``."""
        key = f"{self.store.schema}.{self.projection.name}"
        asking = _AdvisoryLock(self.store.database_url, f"{key}{REBUILD_SUFFIX}", wait_seconds)
        with asking as asked:
            notice = sql.SQL("NOTIFY {}, {}").format(
                sql.Identifier(EVENTS_TABLE), sql.Literal(f"{REBUILD_NOTICE}{key}")
            )
            asked.connection.execute(notice)
            try:
                lock = self.exclusive(wait_seconds=wait_seconds).__enter__()
            except ProjectionBusy:
                raise ProjectionBusy(
                    f"projection {self.projection.name} is still run by another process after "
                    f"{wait_seconds:g} s (one that does not pause for rebuilds?); stop it first"
                ) from None
            try:
                return self._replay_from_scratch(progress)
            finally:
                lock.__exit__()

    def _replay_from_scratch(self, progress: Progress | None) -> int:
        with self.store.transaction() as cursor:
            self._locked_position(cursor)
            drop_tables(cursor, self.store.schema, self.projection.tables)
            self.projection.create(cursor)
            cursor.execute(self._sql_advance, (0, self.projection.name))
        self._last_applied = None
        _forget(self.projection)
        return self.catch_up(progress=progress)

    # -- running live -------------------------------------------------------------------

    def exclusive(self, wait_seconds: float = 0) -> _AdvisoryLock:
        return _AdvisoryLock(
            self.store.database_url, f"{self.store.schema}.{self.projection.name}", wait_seconds
        )

    def _rebuild_asked(self, connection: psycopg.Connection[Any], listen: bool = False) -> bool:
        """Whether a rebuild holds this projection's rebuild lock (autocommit: the shared
        lock tried here ends with the statement). ``listen``: LISTEN on the log's channel
        in the same round trip, first (so the session's last query still reads LISTEN)."""
        key = f"{self.store.schema}.{self.projection.name}{REBUILD_SUFFIX}"
        query = sql.SQL("SELECT pg_try_advisory_xact_lock_shared(hashtextextended({}, 0))").format(
            sql.Literal(key)
        )
        if listen:
            query = sql.SQL("LISTEN {}; ").format(sql.Identifier(EVENTS_TABLE)) + query
        cursor = connection.execute(query)
        if listen:
            cursor.nextset()
        row = cursor.fetchone()
        return not (row and row[0])

    def _wait_out_rebuild(self, stop: threading.Event) -> None:
        """Stand aside until the rebuild that asked for the projection is done."""
        log.info("projection %s: paused for a rebuild", self.projection.name)
        with psycopg.connect(self.store.database_url, autocommit=True) as connection:
            while self._rebuild_asked(connection) and not stop.wait(REBUILD_POLL):
                pass
        self._last_applied = None  # the rebuild moved the position
        _forget(self.projection)

    def run(
        self,
        stop: threading.Event,
        fallback_poll: float = 0.5,
        pause: float = 0.0,
        gather: float = 0.0,
    ) -> None:
        """Follow the log until ``stop`` is set: woken by NOTIFY, polling as a fallback.

        ``pause``: at least this long between two catch-ups, so that a projection nobody
        waits on (audit chain, dataset) takes bigger batches and leaves the interpreter to
        the ones dispatch waits on (readiness). ``gather``: after a notice, wait this long
        before reading, so the commits of the next moments (a task's start and end follow
        its enqueue by a few milliseconds) are read in one batch, and the claim that the
        same commit woke has the processor to itself. Only one process runs a projection at a
        time; the others stand by and take over when the active one's session (and so its
        advisory lock) ends.
        """
        while not stop.is_set():
            try:
                lock = self.exclusive().__enter__()
            except ProjectionBusy:
                stop.wait(1.0)
                continue
            try:
                asked = self._follow(lock.connection, stop, fallback_poll, pause, gather)
            finally:
                lock.__exit__()
            if asked:
                self._wait_out_rebuild(stop)

    def _follow(
        self,
        connection: psycopg.Connection[Any],
        stop: threading.Event,
        fallback_poll: float,
        pause: float,
        gather: float = 0.0,
    ) -> bool:
        """Catch up whenever the log moves, until ``stop`` is set (False) or a rebuild asks
        for the projection (True)."""
        rebuild = f"{REBUILD_NOTICE}{self.store.schema}.{self.projection.name}"
        if self._rebuild_asked(connection, listen=True):  # asked before LISTEN could hear it
            return True
        while not stop.is_set():
            self._catch_up_live(stop)  # a long catch-up stops between batches
            if pause and stop.wait(pause):
                break
            heard = _notices_heard(connection, rebuild, fallback_poll, stop_after=1)
            if heard is None:
                return True
            if heard and gather and stop.wait(gather):
                break
            # The notices that came meanwhile (one per commit) wake one catch-up in all:
            # it reads whatever they announced.
            if _notices_heard(connection, rebuild, 0) is None:
                return True
        return False


def _notices_heard(
    connection: psycopg.Connection[Any], rebuild: str, timeout: float, stop_after: int | None = None
) -> int | None:
    """How many notices came within ``timeout`` (up to ``stop_after``); None if one of them
    asks for a rebuild."""
    heard = 0
    for notice in connection.notifies(timeout=timeout, stop_after=stop_after):
        if notice.payload == rebuild:
            return None
        heard += 1
    return heard


def _compose(template: str, table: sql.Identifier) -> str:
    return sql.SQL(template).format(table).as_string(None)


def _forget(projection: Projection) -> None:
    forget = getattr(projection, "forget", None)
    if forget is not None:
        forget()


class _AdvisoryLock:
    """A session-level advisory lock held on a dedicated connection (also used to LISTEN)."""

    def __init__(self, database_url: str, key: str, wait_seconds: float) -> None:
        self.database_url = database_url
        self.key = key
        self.wait_seconds = wait_seconds
        self.connection: psycopg.Connection[Any]

    def __enter__(self) -> _AdvisoryLock:
        self.connection = psycopg.connect(self.database_url, autocommit=True)
        deadline = self.wait_seconds
        waited = 0.0
        while True:
            row = self.connection.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (self.key,)
            ).fetchone()
            if row and row[0]:
                return self
            if waited >= deadline:
                self.connection.close()
                raise ProjectionBusy(f"{self.key} is being run by another process")
            threading.Event().wait(0.2)
            waited += 0.2

    def __exit__(self, *exc: object) -> None:
        self.connection.close()
