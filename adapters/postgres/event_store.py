"""The event store: the eventsourcing library's Postgres persistence, opened for the ledger.

Aggregates are mapped to stored events by the ``eventsourcing`` application and saved by
group commit (``group_commit.py`` for threads, ``loop_commit.py`` on an event loop):
concurrent saves share one transaction,
and no save takes a table lock — readers stop at the log's horizon (``log_horizon.py``), so
none passes a position that a slower transaction fills later. For processes that must
write read models and new events atomically (the dependency cascade, a worker round),
``append_in`` appends events inside a transaction the caller owns, with the same horizon
lock, NOTIFY and insert statements.

The projection runners of one process read the same stretch of the log within milliseconds
of each other: ``read`` keeps the events it decoded lately (by position, id and version), so
each is decoded once per process rather than once per runner.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Container, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

import psycopg
from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from psycopg.types.composite import register_composite

from execution_ledger.adapters.postgres.connection_pool import CONNINFO_KEY, connect_on_loop
from execution_ledger.adapters.postgres.dispatch_queue import DispatchQueue, change_of
from execution_ledger.adapters.postgres.group_commit import GroupCommit, SaveUnit
from execution_ledger.adapters.postgres.log_horizon import (
    EVENTS_TABLE,
    below_noted_horizon,
    horizon_statement,
    noted_horizon_statement,
)
from execution_ledger.adapters.postgres.log_window import LogWindow
from execution_ledger.adapters.postgres.loop_commit import (
    LoopCommit,
    pipelined_on_loop,
    transaction_on_loop,
)
from execution_ledger.adapters.postgres.one_trip import batched, pipelined
from execution_ledger.adapters.postgres.read_replica import ReadReplica
from execution_ledger.adapters.postgres.recorder import (
    LedgerRecorder,
    Statement,
    id_list,
    run_inline,
    run_inline_on_loop,
)
from execution_ledger.domain.access import AccessDenial
from execution_ledger.domain.bulk import BulkAction
from execution_ledger.domain.errors import TaskNotFound
from execution_ledger.domain.queue import Queue, queue_id
from execution_ledger.domain.registry_history import RegistryHistory
from execution_ledger.domain.schedule_control import ScheduleControl, schedule_control_id
from execution_ledger.domain.task import Task, task_of_enqueued
from execution_ledger.projections.audit_chain import UndecodableEvent
from execution_ledger.projections.base import Event

LedgerAggregate = Task | Queue | ScheduleControl | AccessDenial | BulkAction | RegistryHistory
APPLICATION_NAME = "Ledger"
PIPELINED_SAVE_LIMIT = 500  # events; a larger save is streamed (``_save_streamed``)
STREAM_CHUNK = 200  # aggregates a streamed save maps and sends at a time
RECENT_EVENTS = 20_000  # decoded events kept for the other readers; the oldest quarter goes
LAST_POSITION = 2**62  # above any position the log will give (the horizon bounds reads)


class LedgerApplication(Application):
    """The ledger's eventsourcing application: one events table, ``ledger_events``."""

    name = APPLICATION_NAME


@dataclass(frozen=True)
class RecordedEvent:
    """A stored event with its position in the global log."""

    position: int
    event: Event


def eventsourcing_env(
    database_url: str, schema: str, *, create_table: bool, pool_size: int
) -> dict[str, str]:
    """The library's settings for a database URL (any libpq URL or key=value string).

    The library keeps only five parameters: they name the database in its settings, but its
    factory (``LedgerPostgresFactory``) gives it a pool that connects with the whole URL
    (``POSTGRES_CONNINFO``) before its first connection."""
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    return {
        "PERSISTENCE_MODULE": (
            "execution_ledger.adapters.postgres.connection_pool:LedgerPostgresFactory"
        ),
        CONNINFO_KEY: database_url,
        "POSTGRES_DBNAME": str(params.get("dbname") or params.get("user") or "postgres"),
        "POSTGRES_HOST": str(params.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": str(params.get("port") or "5432"),
        "POSTGRES_USER": str(params.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(params.get("password") or ""),
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "20",
        "POSTGRES_LOCK_TIMEOUT": "10",
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "30",
        "CREATE_TABLE": "y" if create_table else "n",
        "APPLICATION_RECORDER_TOPIC": "execution_ledger.adapters.postgres.recorder:LedgerRecorder",
    }


class EventStore:
    """Reads and writes of the ledger's events."""

    replica: ReadReplica | None = None  # lag-tolerant reads (``read_replica.py``), if any

    def __init__(
        self, database_url: str, schema: str, *, create_table: bool = False, pool_size: int = 5
    ):
        self.database_url = database_url
        self.schema = schema
        self.app = LedgerApplication(
            env=eventsourcing_env(
                database_url, schema, create_table=create_table, pool_size=pool_size
            )
        )
        recorder = self.app.recorder
        assert isinstance(recorder, LedgerRecorder)
        self.recorder = recorder
        self.table = sql.Identifier(schema, EVENTS_TABLE)
        self.dispatch_queue = DispatchQueue(schema)
        self._sql_load_many = (
            sql.SQL(
                "SELECT originator_id, originator_version, topic, state FROM {} "
                "WHERE originator_id = ANY(string_to_array(%s, ',')::uuid[]) "
                "ORDER BY originator_id, originator_version"
            )
            .format(self.table)
            .as_string(None)
        )
        self._sql_horizon = horizon_statement(schema)
        self._sql_note_horizon = noted_horizon_statement(schema)
        # The upper bound is written ``<= ANY(ARRAY[...])``: still the index scan's bound
        # (a read stops at the horizon however much lies beyond it), but not paired with
        # the lower bound into a range, whose size the planner of a table without
        # statistics yet (filled by a burst since the last ANALYZE) guesses at 0.5 % of
        # the rows. With that guess it read the whole backlog through a bitmap and sorted
        # it for the first ``limit`` rows, for each batch of a catch-up (20,000 rows for
        # 500: 10-17 ms against 0.35); now it walks the index in order and stops.
        self._sql_read = (
            sql.SQL(
                "SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM {} WHERE notification_id > %s "
                "AND notification_id <= ANY(ARRAY[least(%s, {})]) "
                "ORDER BY notification_id LIMIT %s"
            )
            .format(self.table, below_noted_horizon())
            .as_string(None)
        )
        self._sql_last_below = (
            sql.SQL("SELECT max(notification_id) AS last FROM {} WHERE notification_id <= %s")
            .format(self.table)
            .as_string(None)
        )
        self.group = GroupCommit(self._commit_units)
        self._loop_commits: dict[asyncio.AbstractEventLoop, LoopCommit] = {}
        self._loop_commits_lock = threading.Lock()
        self._recent: dict[tuple[int, UUID, int], Event] = {}
        self._window: LogWindow[RecordedEvent] = LogWindow()
        self._recent_lock = threading.Lock()

    def close(self) -> None:
        with self._loop_commits_lock:
            for loop_commit in self._loop_commits.values():
                loop_commit.discard()
            self._loop_commits.clear()
        self.app.close()

    # -- writing ------------------------------------------------------------------------

    def save(
        self,
        *aggregates: LedgerAggregate,
        inline: Sequence[Statement] = (),
    ) -> list[RecordedEvent]:
        """Append the pending events of ``aggregates`` in one transaction (all or nothing),
        shared with the saves of other threads of this process that arrive meanwhile (group
        commit); a conflict or refusal of this save raises here and fails no other save.
        The dispatch queue moves with the events. Returns the events with their positions.
        A save of more than ``PIPELINED_SAVE_LIMIT`` events has a transaction of its own,
        streamed to the server in chunks (``_save_streamed``)."""
        if sum(len(aggregate.pending_events) for aggregate in aggregates) > PIPELINED_SAVE_LIMIT:
            return self._save_streamed(aggregates, inline)
        unit, events = self._unit(aggregates, inline)
        self.group.submit(unit)
        return [RecordedEvent(p, e) for p, e in zip(unit.positions, events, strict=True)]

    def _save_streamed(
        self, aggregates: Sequence[LedgerAggregate], inline: Sequence[Statement]
    ) -> list[RecordedEvent]:
        """``save`` of many events (a bulk ``enqueue_graph``), streamed: one transaction
        whose chunks go to the server as soon as they are mapped, so the server inserts
        one chunk while this thread maps the next (mapped first and sent after, the two
        took turns: the insert was a fifth of a bulk enqueue's time). In pipeline mode:
        nothing is waited for until the commit, one round trip in all. Still all or
        nothing, the ``inline`` statements first, positions in event order. Not through
        the group commit: it would hold up the small saves of other threads."""
        events: list[Any] = []
        appends: list[psycopg.Cursor[DictRow]] = []
        with self.recorder.datastore.get_connection() as conn, pipelined(conn) as cursor:
            run_inline(cursor, inline)
            for start in range(0, len(aggregates), STREAM_CHUNK):
                unit, mapped = self._unit(aggregates[start : start + STREAM_CHUNK], ())
                run_inline(cursor, self.dispatch_queue.statements([unit.dispatch]))
                if unit.stored:
                    appending = conn.cursor(row_factory=dict_row)
                    appending.execute(*self.recorder.append_call(unit.stored))
                    appends.append(appending)
                    events += mapped
        positions = [row["notification_id"] for each in appends for row in each.fetchall()]
        return [RecordedEvent(p, e) for p, e in zip(positions, events, strict=True)]

    async def save_async(
        self, *aggregates: LedgerAggregate, inline: Sequence[Statement] = ()
    ) -> list[RecordedEvent]:
        """``save`` for a caller on an event loop, with no thread at all: the events are
        mapped here and the unit joins the loop's own group commit (``loop_commit.py``),
        which commits on the loop; a conflict or refusal of this save raises here and fails
        no other save."""
        unit, events = self._unit(aggregates, inline)
        await self.loop_commit().submit(unit)
        return [RecordedEvent(p, e) for p, e in zip(unit.positions, events, strict=True)]

    def loop_commit(self) -> LoopCommit:
        """The running event loop's group commit (made on first use; those of loops that
        have ended are closed then)."""
        loop = asyncio.get_running_loop()
        with self._loop_commits_lock:
            found = self._loop_commits.get(loop)
            if found is None:
                for ended in [each for each in self._loop_commits if each.is_closed()]:
                    self._loop_commits.pop(ended).discard()
                found = self._loop_commits[loop] = LoopCommit(
                    lambda: connect_on_loop(self.recorder.datastore), self._commit_units_on_loop
                )
            return found

    def _unit(
        self, aggregates: Sequence[LedgerAggregate], inline: Sequence[Statement]
    ) -> tuple[SaveUnit, list[Any]]:
        """The save of ``aggregates`` as a group-commit unit, and their pending events."""
        dispatch = change_of(aggregates)  # before the events are collected
        events = [event for aggregate in aggregates for event in aggregate.collect_events()]
        stored = [self.app.mapper.to_stored_event(event) for event in events]
        return SaveUnit(stored, list(inline), dispatch), events

    def _commit_units(self, units: Sequence[SaveUnit]) -> None:
        """One transaction for the units of a group commit: their statements, then one
        insert of all their events, whose positions each unit gets back. Pipelined (one
        round trip) unless it is large: a pipelined insert of thousands of events stalled
        here with client and server both waiting."""
        stored = [event for unit in units for event in unit.stored]
        one_trip = len(stored) <= PIPELINED_SAVE_LIMIT
        with self.recorder.datastore.get_connection() as conn:
            with pipelined(conn) if one_trip else _in_transaction(conn) as cursor:
                for unit in units:
                    run_inline(cursor, unit.inline)
                run_inline(cursor, self.dispatch_queue.statements(u.dispatch for u in units))
                inserting = conn.cursor()
                if stored:
                    self.recorder._insert_stored_events(inserting, stored)
            found = [row["notification_id"] for row in inserting.fetchall()] if stored else []
        _hand_out(units, found)

    async def _commit_units_on_loop(
        self, conn: psycopg.AsyncConnection[Any], units: Sequence[SaveUnit]
    ) -> None:
        """``_commit_units`` on an event loop's async connection."""
        stored = [event for unit in units for event in unit.stored]
        one_trip = len(stored) <= PIPELINED_SAVE_LIMIT
        async with pipelined_on_loop(conn) if one_trip else transaction_on_loop(conn) as cursor:
            for unit in units:
                await run_inline_on_loop(cursor, unit.inline)
            dispatch = self.dispatch_queue.statements(u.dispatch for u in units)
            await run_inline_on_loop(cursor, dispatch)
            inserting = conn.cursor(row_factory=dict_row)
            if stored:
                await inserting.execute(*self.recorder.append_call(stored))
        found = [row["notification_id"] for row in await inserting.fetchall()] if stored else []
        _hand_out(units, found)

    def adopt(self, connection: psycopg.Connection[Any]) -> psycopg.Cursor[DictRow]:
        """A cursor on the caller's own connection that ``append_in`` can write with: the
        library's composite type is registered on it and rows come back as dicts."""
        for info in self.recorder.datastore.psycopg_type_adapters.values():
            if not connection.adapters.types.get(info.oid):
                register_composite(info, connection)
        return connection.cursor(row_factory=dict_row)

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[DictRow]]:
        """A transaction on a pooled connection; library errors are the library's types."""
        with self.recorder.datastore.get_connection() as conn, conn.transaction():
            yield conn.cursor()

    @contextmanager
    def pipelined_transaction(self) -> Iterator[psycopg.Cursor[DictRow]]:
        """A transaction in pipeline mode: ``BEGIN`` and ``COMMIT`` cost no round trip of
        their own (they travel with the statements around them, ``one_trip.py``); a result
        is waited for only when it is fetched."""
        with self.recorder.datastore.get_connection() as conn, pipelined(conn) as cursor:
            yield cursor

    def append_in(
        self,
        cursor: psycopg.Cursor[DictRow],
        tasks: Iterable[LedgerAggregate],
        inline: Sequence[Statement] = (),
        *,
        positions: bool = True,
        sender: str | None = None,
        unbound: Container[str] = (),
    ) -> list[RecordedEvent]:
        """Append the tasks' pending events inside the caller's transaction; return them
        with their log positions. The dispatch queue moves with the events (``sender``: the
        worker whose round this is, named in its ready notice; ``unbound``: queues whose
        freed slots wake no other node, ``DispatchQueue.statements_for``).

        ``positions=False`` returns nothing and, in a caller's pipeline, waits for nothing:
        the statements travel with the caller's next sync (its ``COMMIT``), and an error
        such as a version conflict is raised there.
        """
        tasks = list(tasks)
        inline = [*inline, *self.dispatch_queue.statements_for(tasks, sender, unbound)]
        events = [event for task in tasks for event in task.collect_events()]
        stored = [self.app.mapper.to_stored_event(event) for event in events]
        # Inside the caller's pipeline nothing is waited for here, but the positions when
        # asked for (one round trip); else in a pipeline of its own.
        with batched(cursor.connection):
            run_inline(cursor, inline)
            if not stored:
                return []
            # The library's own statements: table lock, NOTIFY, insert.
            self.recorder._insert_stored_events(cursor, stored)
            if not positions:
                return []
            found = [row["notification_id"] for row in cursor.fetchall()]
        return [RecordedEvent(p, e) for p, e in zip(found, events, strict=True)]

    # -- reading ------------------------------------------------------------------------

    def load(self, task_id: UUID) -> Task:
        from eventsourcing.application import AggregateNotFoundError

        try:
            task: object = self.app.repository.get(task_id)  # any aggregate: checked below
        except AggregateNotFoundError:
            raise TaskNotFound(f"no task {task_id}") from None
        if not isinstance(task, Task):
            raise TaskNotFound(f"no task {task_id}")
        return task

    def load_many(
        self, task_ids: Sequence[UUID], cursor: psycopg.Cursor[DictRow] | None = None
    ) -> dict[UUID, Task]:
        """Several tasks in one query (ids not found are left out); in ``cursor``'s
        transaction when given, else on a pooled connection of its own."""
        if not task_ids:
            return {}
        if cursor is not None:
            return self.fold(cursor.execute(self._sql_load_many, (id_list(task_ids),)).fetchall())
        with self.recorder.datastore.get_connection() as conn:
            rows = conn.execute(self._sql_load_many, (id_list(task_ids),)).fetchall()
        return self.fold(rows)

    def fold(self, rows: Iterable[dict[str, Any]]) -> dict[UUID, Task]:
        """Tasks from stored event rows (``originator_id``, ``originator_version``,
        ``topic``, ``state``), each task's rows in version order."""
        tasks: dict[UUID, Any] = {}
        for row in rows:
            event = self._decode(row)
            task = tasks.get(row["originator_id"])
            if task is None and type(event) is Task.TaskEnqueued:
                tasks[row["originator_id"]] = task_of_enqueued(event)
            else:
                tasks[row["originator_id"]] = event.mutate(task)
        return tasks

    def load_queue(self, name: str) -> Queue:
        """The queue's aggregate, registered (not yet saved) on first use."""
        queue = self._load_or_none(queue_id(name))
        return queue if isinstance(queue, Queue) else Queue.register(name)

    def load_schedule_control(self, name: str) -> ScheduleControl:
        """The schedule's on/off switch, registered (not yet saved) on first use."""
        control = self._load_or_none(schedule_control_id(name))
        if isinstance(control, ScheduleControl):
            return control
        return ScheduleControl.register(name)

    def load_bulk_action(self, bulk_id: UUID) -> BulkAction | None:
        """A bulk action's aggregate, None if there is none with this id."""
        action = self._load_or_none(bulk_id)
        return action if isinstance(action, BulkAction) else None

    def _load_or_none(self, aggregate_id: UUID) -> object | None:
        from eventsourcing.application import AggregateNotFoundError

        try:
            return self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def latest_versions(self, task_ids: Sequence[UUID]) -> dict[UUID, int]:
        if not task_ids:
            return {}
        query = sql.SQL(
            "SELECT originator_id, max(originator_version) AS version FROM {} "
            "WHERE originator_id = ANY(%s) GROUP BY originator_id"
        ).format(self.table)
        with self.recorder.datastore.get_connection() as conn:
            rows = conn.execute(query, (list(task_ids),)).fetchall()
        return {row["originator_id"]: row["version"] for row in rows}

    def head_position(self) -> int:
        """The position of the last event at or below the log's horizon: every event up to
        it is stored for good, so reading up to it never skips an event that a slower
        transaction commits later (``log_horizon.py``)."""
        with self.recorder.datastore.get_connection() as conn:
            horizon = self._horizon(conn)
            row = conn.execute(self._sql_last_below, (horizon,)).fetchone()
        return int(row["last"]) if row and row["last"] is not None else 0

    def _horizon(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(self._sql_horizon).fetchone()
        return int(row["horizon"]) if row and row["horizon"] is not None else 0

    def read(self, after: int, limit: int, until: int | None = None) -> list[RecordedEvent]:
        """Events with ``after < position <= until``, in log order, at most ``limit``; never
        past the log's horizon. The readers of this process that follow the head (the
        projection runners, the egress, event streams) share one read of each stretch
        (``log_window.py``)."""
        return self._window.read(after, limit, until, self._read_from_database)

    def _read_from_database(self, after: int, limit: int, until: int | None) -> list[RecordedEvent]:
        """``read`` from the table: the horizon is computed first, the rows read in a later
        statement (two snapshots, in that order, sent together in one round trip)."""
        stop = LAST_POSITION if until is None else until
        with self.recorder.datastore.get_connection() as conn:
            with conn.pipeline():
                conn.execute(self._sql_note_horizon)
                reading = conn.execute(self._sql_read, (after, stop, limit))
            rows = reading.fetchall()
        return [RecordedEvent(row["notification_id"], self._decode_or_mark(row)) for row in rows]

    def _decode_or_mark(self, row: dict[str, Any]) -> Any:
        """The row's event; an ``UndecodableEvent`` in its place when it does not decode
        (a topic that does not resolve, a state that does not parse), so that no reader of
        the log stops at one bad row."""
        try:
            return self._decode_recent(row)
        except Exception as error:
            return UndecodableEvent(
                row["notification_id"],
                row["originator_id"],
                row["originator_version"],
                row["topic"],
                f"{type(error).__name__}: {error}",
            )

    def _decode_recent(self, row: dict[str, Any]) -> Event:
        """The event of a stored row, decoded once while it is recent (events are
        immutable, so readers can share one object)."""
        key = (row["notification_id"], row["originator_id"], row["originator_version"])
        event = self._recent.get(key)
        if event is None:
            event = self._decode(row)
            with self._recent_lock:
                if len(self._recent) >= RECENT_EVENTS:
                    for old in list(itertools.islice(self._recent, RECENT_EVENTS // 4)):
                        del self._recent[old]
                self._recent[key] = event
        return event

    def history(self, task_id: UUID) -> list[RecordedEvent]:
        """All events of one task, oldest first, with their log positions."""
        query = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {} WHERE originator_id = %s ORDER BY originator_version"
        ).format(self.table)
        with self.recorder.datastore.get_connection() as conn:
            rows = conn.execute(query, (task_id,)).fetchall()
        return [RecordedEvent(row["notification_id"], self._decode(row)) for row in rows]

    def _decode(self, row: dict[str, Any]) -> Event:
        stored = StoredEvent(
            originator_id=row["originator_id"],
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=bytes(row["state"]),
        )
        return self.to_event(stored)

    def to_event(self, stored: StoredEvent) -> Event:
        """The domain event of a stored one. The library promises a ``DomainEventProtocol``;
        the log holds only the ledger's aggregate events, which all carry a timestamp."""
        return cast(Event, self.app.mapper.to_domain_event(stored))


@contextmanager
def _in_transaction(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Cursor[DictRow]]:
    with conn.transaction():
        yield conn.cursor(row_factory=dict_row)


def _hand_out(units: Sequence[SaveUnit], positions: Sequence[int]) -> None:
    """Give each unit its events' positions (``positions`` in the units' order)."""
    offset = 0
    for unit in units:
        unit.positions = list(positions[offset : offset + len(unit.stored)])
        offset += len(unit.stored)
