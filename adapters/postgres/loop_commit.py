"""Group commit on an event loop: the saves awaited on one loop share a transaction that
the loop itself commits, over an async connection of its own.

The HTTP API plans an enqueue on its event loop. Its save used to join the process's
threaded group commit (``group_commit.py``) and a thread led the commit: every commit then
changed hands twice between the loop's thread and the committing one, and each hand-over
waited for the interpreter lock, up to its 5 ms switch interval while the loop was busy
parsing the next requests (measured in ``ledger serve`` under 20 clients: commits of ~1 ms
of work took ~6 ms). ``LoopCommit`` keeps the whole path on the loop:

- ``submit`` queues a unit and awaits its outcome; the first unit that finds no commit in
  flight starts the leader, a task of the loop, which commits everything queued by then in
  one transaction, then whatever queued meanwhile, until the queue is empty. A lone save
  commits at the loop's next turn (no timer, no wait for company).
- Each caller gets its own outcome: a failed batch is committed again unit by unit, each in
  its own transaction, as the threaded group commit does (``unit_may_be_at_fault``).
- The loop's connection is its own (one transaction in flight per loop needs one). Before
  each batch it is checked without a round trip, as the pool checks its connections: one the
  server closed is replaced. A connection that cannot be had raises ``NoConnectionInTime``
  (nothing was written: HTTP answers 503); one lost while a batch was under way raises the
  library's ``OperationalError`` (the batch may have committed: ``outcome_unknown``).
- A caller cancelled while it waits (a request whose client went away) leaves its unit in
  the queue: it commits, as a thread's save would have.

psycopg's errors reach the callers as the library's (``IntegrityError`` for a version
conflict, ...), as they do from a save in a thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import eventsourcing.persistence as library
import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row

from execution_ledger.adapters.deadlines import NoConnectionInTime
from execution_ledger.adapters.postgres.connection_pool import has_input
from execution_ledger.adapters.postgres.group_commit import (
    MAX_BATCH_EVENTS,
    SaveUnit,
    take_batch,
    unit_may_be_at_fault,
)

Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]
# Commits the units in one transaction on the connection and sets each unit's
# ``positions``; raises if the transaction failed.
CommitOn = Callable[[psycopg.AsyncConnection[Any], Sequence[SaveUnit]], Awaitable[None]]


class LoopCommit:
    """Leader/follower batching of one event loop's ``SaveUnit``s, committed on the loop."""

    def __init__(
        self, connect: Connect, commit: CommitOn, max_batch_events: int = MAX_BATCH_EVENTS
    ) -> None:
        self._connect = connect
        self._commit = commit
        self._max_batch_events = max_batch_events
        self._queue: deque[SaveUnit] = deque()
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._leader: asyncio.Task[None] | None = None
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self.batches = 0  # committed transactions, for tests and metrics
        self.units = 0

    async def submit(self, unit: SaveUnit) -> None:
        """Commit ``unit`` (with whatever else is queued); raise its own error if it failed."""
        done = asyncio.get_running_loop().create_future()
        self._waiters[id(unit)] = done
        self._queue.append(unit)
        if self._leader is None:
            self._leader = asyncio.create_task(self._lead())
        await done
        if unit.error is not None:
            raise unit.error

    @property
    def leading(self) -> bool:
        """Whether a commit is in flight (or about to start)."""
        return self._leader is not None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def discard(self) -> None:
        """Close the loop's connection without the loop (its loop has ended, or the store
        is closing): the socket is closed at once, no message is awaited."""
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            connection.pgconn.finish()

    async def _lead(self) -> None:
        try:
            while self._queue:
                await self._commit_with_fallback(take_batch(self._queue, self._max_batch_events))
        finally:
            self._leader = None

    async def _commit_with_fallback(self, batch: list[SaveUnit]) -> None:
        try:
            await self._commit_batch(batch)
        except BaseException as error:
            if len(batch) == 1 or not unit_may_be_at_fault(error):
                for unit in batch:
                    self._finish(unit, error)
                return
            for unit in batch:  # one transaction each: only the unit at fault fails
                try:
                    await self._commit_batch([unit])
                except BaseException as own_error:
                    self._finish(unit, own_error)
                else:
                    self._committed([unit])
            return
        self._committed(batch)

    async def _commit_batch(self, batch: Sequence[SaveUnit]) -> None:
        connection = await self._usable_connection()
        try:
            with library_errors():
                await self._commit(connection, batch)
        except (library.OperationalError, library.InterfaceError):
            self.discard()  # lost or broken: the next batch connects afresh
            raise

    async def _usable_connection(self) -> psycopg.AsyncConnection[Any]:
        """The loop's connection, checked as the pool checks its own; a new one when the
        server closed it or there was none."""
        connection = self._connection
        if connection is not None and (connection.closed or has_input(connection)):
            self.discard()
            connection = None
        if connection is None:
            try:
                connection = await self._connect()
            except psycopg.Error as error:
                raise NoConnectionInTime(f"could not connect: {error}") from error
            self._connection = connection
        return connection

    def _committed(self, batch: list[SaveUnit]) -> None:
        self.batches += 1
        self.units += len(batch)
        for unit in batch:
            self._finish(unit)

    def _finish(self, unit: SaveUnit, error: BaseException | None = None) -> None:
        unit.error = error
        unit.done = True
        done = self._waiters.pop(id(unit))
        if not done.done():  # its caller may have been cancelled meanwhile
            done.set_result(None)


@asynccontextmanager
async def pipelined_on_loop(
    conn: psycopg.AsyncConnection[Any],
) -> AsyncIterator[psycopg.AsyncCursor[DictRow]]:
    """``one_trip.pipelined`` on an async connection: ``BEGIN``, the caller's statements and
    ``COMMIT`` in one pipeline, one sync; a failed or abandoned transaction is rolled back
    (psycopg's rollback, which also forgets the statements prepared in the pipeline)."""
    cursor = conn.cursor(row_factory=dict_row)
    try:
        async with conn.pipeline():
            await cursor.execute("BEGIN")
            yield cursor
            await cursor.execute("COMMIT")
    finally:
        if not conn.closed and conn.info.transaction_status in _OPEN:
            with suppress(psycopg.Error):
                await conn.rollback()


@asynccontextmanager
async def transaction_on_loop(
    conn: psycopg.AsyncConnection[Any],
) -> AsyncIterator[psycopg.AsyncCursor[DictRow]]:
    """A plain transaction, each statement its own round trip (for saves too large to send
    in one pipeline)."""
    async with conn.transaction():
        yield conn.cursor(row_factory=dict_row)


_OPEN = (TransactionStatus.INTRANS, TransactionStatus.INERROR)

# psycopg's errors and the library's, as ``PostgresDatastore.get_connection`` maps them
# (most specific first).
_LIBRARY_ERRORS: tuple[tuple[type[psycopg.Error], type[Exception]], ...] = (
    (psycopg.InterfaceError, library.InterfaceError),
    (psycopg.OperationalError, library.OperationalError),
    (psycopg.DataError, library.DataError),
    (psycopg.IntegrityError, library.IntegrityError),
    (psycopg.InternalError, library.InternalError),
    (psycopg.ProgrammingError, library.ProgrammingError),
    (psycopg.NotSupportedError, library.NotSupportedError),
    (psycopg.DatabaseError, library.DatabaseError),
    (psycopg.Error, library.PersistenceError),
)


@contextmanager
def library_errors() -> Iterator[None]:
    """Raise psycopg's errors as the eventsourcing library's (the cause kept)."""
    try:
        yield
    except psycopg.Error as error:
        for raised, library_type in _LIBRARY_ERRORS:
            if isinstance(error, raised):
                raise library_type(str(error)) from error
        raise
