"""The audit trail in PostgreSQL: the append-only guard on the events table, verification of
the audit chain against the log, and the global log read with who / what / when filters.

Who ("principal" and "actor") per event, decided from the log alone:

- an event with a ``principal`` or ``by`` field (``TaskEnqueued``, ``TaskCancelled``, a
  manual ``TaskRetryScheduled``, ``QueuePaused``, ``QueueResumed``, and any future event
  such as ``AccessDenied`` that names its principal) was done by that principal:
  principal = actor = that value;
- ``TaskStarted``: actor = its ``worker``; ``TaskHeartbeat`` / ``TaskSucceeded`` /
  ``TaskFailed``: actor = the worker that started that attempt;
- ``TaskTimedOut``, ``TaskUnblocked``, ``TaskSkipped`` and an automatic
  ``TaskRetryScheduled``: actor = ``system`` (the watchdog, the cascade, the retry policy);
- for every task event not done by a named principal, principal = the task's owner (the
  principal of its ``TaskEnqueued``): the work was done on their behalf.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from execution_ledger.adapters.postgres.event_store import EVENTS_TABLE, EventStore
from execution_ledger.adapters.postgres.projection_runner import ProjectionRunner
from execution_ledger.adapters.retention.archive_sql import read_head as read_archive_head
from execution_ledger.adapters.retention.segments import ArchiveDir
from execution_ledger.adapters.retention.verify import verify_archive
from execution_ledger.domain.errors import InvalidQuery
from execution_ledger.domain.task import Task
from execution_ledger.projections.audit_chain import (
    ARCHIVE_HEAD_TABLE,
    GENESIS,
    TABLE,
    UNDECODABLE_TABLE,
    canonical_bytes,
    event_hash,
    next_chain_hash,
)
from execution_ledger.projections.base import Event, is_task_event, kind

log = logging.getLogger(__name__)
APPEND_ONLY_MESSAGE = "ledger events are append-only"
GUARD_FUNCTION = "ledger_events_append_only"
ROW_TRIGGER = "ledger_events_append_only"
TRUNCATE_TRIGGER = "ledger_events_no_truncate"
SYSTEM = "system"
SCAN_WINDOW = 20_000  # log positions one page of ``audit_events`` may read past ``after``
CHUNK = 500
VERIFY_FETCH = 2_000
_CHAINED_FIELDS = ("originator_id", "originator_version", "topic")  # also in each chain row


# -- the append-only guard --------------------------------------------------------------

# One way past the guard: the archival's DELETE inside ``ledger_archive_delete`` (a SECURITY
# DEFINER function only the owner may run, ``adapters/retention/archive_sql.py``), which sets
# ``ledger.archived_through`` for its statement; even then only rows at or below the archive
# head (positions already in a verified archived segment) may go.
_GUARD = """
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND nullif(current_setting('ledger.archived_through', true), '') IS NOT NULL THEN
        IF OLD.notification_id <= current_setting('ledger.archived_through')::bigint
           AND OLD.notification_id <= (SELECT h.position FROM {archive_head} h) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION '{message}: % refused on %.%', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING HINT = 'the event log is corrected by appending events, never by editing it';
END
$$
"""
_TRIGGERS = {
    ROW_TRIGGER: "BEFORE UPDATE OR DELETE ON {table} FOR EACH ROW",
    TRUNCATE_TRIGGER: "BEFORE TRUNCATE ON {table} FOR EACH STATEMENT",
}
# What ``protect_events_table`` installs, as text: part of the schema's fingerprint.
TRIGGERS_TEXT = _GUARD + "".join(f"{name}: {when}" for name, when in _TRIGGERS.items())
_CREATE_TRIGGER = "CREATE OR REPLACE TRIGGER {name} {when} EXECUTE FUNCTION {function}()"


def protect_events_table(conn: psycopg.Connection[Any], schema: str) -> None:
    """Make ``schema.ledger_events`` refuse UPDATE, DELETE and TRUNCATE (idempotent).

    The function is replaced every time (no table lock); a trigger is created only when
    missing, so a restart does not queue behind the writers' table lock. A superuser (or
    the table's owner) can still disable the triggers: the audit chain detects what was
    changed meanwhile. Run it under the schema's migration lock (``create_schema``).
    """
    table = sql.Identifier(schema, EVENTS_TABLE)
    function = sql.Identifier(schema, GUARD_FUNCTION)
    with conn.transaction():
        conn.execute(
            sql.SQL(_GUARD.replace("{message}", APPEND_ONLY_MESSAGE)).format(
                function=function, archive_head=sql.Identifier(schema, ARCHIVE_HEAD_TABLE)
            )
        )
        cursor = conn.cursor(row_factory=tuple_row)  # whatever the connection's factory
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(%s)",
            (table.as_string(conn),),
        )
        present = {name for (name,) in cursor}
        for name, when in _TRIGGERS.items():
            if name not in present:
                when_sql = sql.SQL(when).format(table=table)
                conn.execute(
                    sql.SQL(_CREATE_TRIGGER).format(
                        name=sql.Identifier(name), when=when_sql, function=function
                    )
                )


# -- verifying the chain ----------------------------------------------------------------


@dataclass(frozen=True)
class VerifyReport:
    """``ok``, or the first position where the log and the chain part.

    ``reason``: ``ok``; ``altered`` (the stored event's bytes changed); ``missing`` (a
    chained event is gone from the log); ``inserted`` (an event in the log below the chain's
    head that was never chained); ``chain-broken`` (the chain rows do not follow from one
    another: the chain table was edited, or an event was removed together with its row).
    ``catch-up-failed`` (what is chained is intact, but the chain could not be brought up
    to the head: an event after it no longer decodes, or the database failed).
    ``archive-missing`` / ``archive-altered``: part of the log is archived and a segment (or
    the archive directory) is missing, or a segment differs from what was chained
    (``adapters/retention/verify.py``).
    ``unchained``: events after the chain's head, not checked (the projection lags).
    ``undecodable``: positions of chained rows whose event does not decode (a topic that
    does not resolve, a state that does not parse): chained and verified by their stored
    bytes like every row, but skipped by the other projections.
    """

    ok: bool
    checked: int
    first_bad_position: int | None
    reason: str
    detail: str = ""
    unchained: int = 0
    undecodable: tuple[int, ...] = ()


def verify_chain(
    store: EventStore,
    chain: ProjectionRunner | None = None,
    read_url: Callable[[], str] | None = None,
    archive: ArchiveDir | None = None,
) -> VerifyReport:
    """Recompute the chain from the stored events and compare it with ``audit_chain``.

    Once part of the log is archived (``adapters/retention/``), the archived segments in
    ``archive`` are checked first, then the live log from the archive head's hash on.

    With ``chain`` (the audit chain's runner), catch it up first, so that everything in
    the log now is checked; events appended meanwhile are counted as ``unchained``. Both
    tables are read in one snapshot through server-side cursors: memory stays flat;
    ``read_url``, asked after the catch-up, says where (a replica; the store's by default).
    """
    catch_up_error = None
    if chain is not None:
        try:
            chain.catch_up()
        except Exception as error:  # e.g. an altered event that no longer decodes
            catch_up_error = f"the chain could not catch up: {type(error).__name__}: {error}"
    url = store.database_url if read_url is None else read_url()
    with psycopg.connect(url, row_factory=dict_row) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        report = _with_undecodable(_verify_all(conn, store.schema, archive), conn, store.schema)
    if catch_up_error is None:
        return report
    if not report.ok:
        return dataclasses.replace(report, detail=f"{report.detail}; {catch_up_error}")
    return dataclasses.replace(
        report, ok=False, reason="catch-up-failed", detail=f"{report.detail}; {catch_up_error}"
    )


def _verify_all(
    conn: psycopg.Connection[Any], schema: str, archive: ArchiveDir | None
) -> VerifyReport:
    """The archived history (when there is one), then the live log after it."""
    head = read_archive_head(conn, schema)
    if head is None or head.position == 0:
        return _compare(conn, schema)
    archived = verify_archive(conn, schema, archive, head)
    if not archived.ok:
        position = head.position if archived.position is None else archived.position
        return _bad(archived.checked, position, archived.reason, archived.detail)
    live = _compare(conn, schema, head.position, head.chain_hash)
    detail = f"{archived.detail}; {live.detail}" if live.ok else live.detail
    return dataclasses.replace(live, checked=archived.checked + live.checked, detail=detail)


def _compare(
    conn: psycopg.Connection[Any], schema: str, after: int = 0, previous: bytes = GENESIS
) -> VerifyReport:
    """The live log after ``after`` against the chain rows after it, chained on from
    ``previous`` (the archive head's hash; none archived: from the start)."""
    events_table = sql.Identifier(schema, EVENTS_TABLE)
    chain_table = sql.Identifier(schema, TABLE)
    events = _stream(
        conn,
        "audit_verify_events",
        sql.SQL(
            "SELECT notification_id AS position, originator_id, originator_version, topic, "
            "state FROM {} WHERE notification_id > {} ORDER BY notification_id"
        ).format(events_table, sql.Literal(after)),
    )
    rows = _stream(
        conn,
        "audit_verify_chain",
        sql.SQL("SELECT * FROM {} WHERE position > {} ORDER BY position").format(
            chain_table, sql.Literal(after)
        ),
    )
    checked = 0
    event = next(events, None)
    for row in rows:
        position = row["position"]
        if event is None or event["position"] > position:
            return _bad(checked, position, "missing", "a chained event is gone from the log")
        if event["position"] < position:
            return _bad(
                checked, event["position"], "inserted", "an event in the log was never chained"
            )
        canonical = canonical_bytes(
            position,
            event["originator_id"],
            event["originator_version"],
            event["topic"],
            None if event["state"] is None else bytes(event["state"]),
        )
        if event_hash(canonical) != bytes(row["event_hash"]):
            return _bad(
                checked, position, "altered", "the stored event differs from the one chained"
            )
        if next_chain_hash(previous, canonical) != bytes(row["chain_hash"]):
            return _bad(
                checked,
                position,
                "chain-broken",
                "the chain row does not follow from the one before it",
            )
        if differing := next((f for f in _CHAINED_FIELDS if row[f] != event[f]), None):
            detail = f"the chain row's {differing} differs from the event's"
            return _bad(checked, position, "chain-broken", detail)
        previous = bytes(row["chain_hash"])
        checked += 1
        event = next(events, None)
    unchained = 0 if event is None else 1 + sum(1 for _ in events)
    detail = f"{checked} events verified"
    if unchained:
        detail += f"; {unchained} later events not chained yet"
    return VerifyReport(True, checked, None, "ok", detail, unchained)


def _with_undecodable(
    report: VerifyReport, conn: psycopg.Connection[Any], schema: str
) -> VerifyReport:
    """The report with the chained positions whose event does not decode (in the same
    snapshot), each also logged as a warning."""
    rows = conn.execute(
        sql.SQL("SELECT position, topic, error FROM {} ORDER BY position").format(
            sql.Identifier(schema, UNDECODABLE_TABLE)
        )
    ).fetchall()
    if not rows:
        return report
    for row in rows:
        log.warning(
            "audit: the event at position %d (topic %r) does not decode (%s); "
            "it is chained by its stored bytes",
            row["position"],
            row["topic"],
            row["error"],
        )
    positions = tuple(row["position"] for row in rows)
    listed = ", ".join(str(p) for p in positions[:20]) + (", ..." if len(positions) > 20 else "")
    detail = f"{report.detail}; {len(positions)} undecodable (at {listed})"
    return dataclasses.replace(report, detail=detail, undecodable=positions)


def _bad(checked: int, position: int, reason: str, detail: str) -> VerifyReport:
    return VerifyReport(False, checked, position, reason, detail)


def _stream(conn: psycopg.Connection[Any], name: str, query: sql.Composed) -> Iterator[Any]:
    cursor = conn.cursor(name=name)
    cursor.itersize = VERIFY_FETCH
    cursor.execute(query)
    return iter(cursor)


# -- reading the log: who, what, when ---------------------------------------------------

_META = {"originator_id", "originator_version", "timestamp", "originator_topic"}
_EVENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ATTEMPT_EVENTS = {"TaskHeartbeat", "TaskSucceeded", "TaskFailed"}
_CONTEXT_TOPICS = [get_topic(Task.TaskEnqueued), get_topic(Task.TaskStarted)]


@dataclass(frozen=True)
class AuditFilter:
    """Which events to list; every given condition must hold. ``types`` are event names
    (``TaskCancelled``); ``since`` is inclusive, ``until`` exclusive."""

    task_id: UUID | None = None
    principal: str | None = None
    actor: str | None = None
    types: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in self.types:
            if not _EVENT_NAME.fullmatch(name):
                raise InvalidQuery(f"not an event type name: {name!r}")
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise InvalidQuery("times need a time zone (e.g. 2026-01-01T09:00:00+00:00)")

    def matches(self, entry: AuditEntry) -> bool:
        return (
            (self.principal is None or entry.principal == self.principal)
            and (self.actor is None or entry.actor == self.actor)
            and (self.since is None or entry.time >= self.since)
            and (self.until is None or entry.time < self.until)
        )


@dataclass(frozen=True)
class AuditEntry:
    position: int
    time: datetime
    type: str
    aggregate: str
    subject_id: UUID
    version: int
    principal: str
    actor: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    next_after: int | None  # pass as ``after`` for the next page; None: the head is reached
    head: int


def attribute(event: Event, owner: str | None, worker: str | None) -> tuple[str, str]:
    """(principal, actor) of one event; ``owner`` is the task's enqueuer, ``worker`` the
    worker of the event's attempt (see the module's docstring)."""
    for name in ("principal", "by"):
        value = getattr(event, name, None)
        if isinstance(value, str) and value:
            return value, value
    principal = owner or SYSTEM
    name = kind(event)
    if name == "TaskStarted":
        return principal, str(getattr(event, "worker", SYSTEM))
    if name in _ATTEMPT_EVENTS:
        return principal, worker or SYSTEM
    return principal, SYSTEM


def audit_events(
    store: EventStore,
    where: AuditFilter = AuditFilter(),
    after: int = 0,
    limit: int = 100,
    scan_window: int = SCAN_WINDOW,
) -> AuditPage:
    """Matching events with ``after < position``, oldest first, at most ``limit``.

    Without ``task_id`` a page reads at most ``scan_window`` positions, so a rare match
    answers quickly; ``next_after`` says where to go on. Type, task and position are
    filtered in SQL; principal, actor and time on the decoded events.
    """
    if limit < 1:
        raise InvalidQuery("limit must be at least 1")
    head = store.head_position()
    stop = head if where.task_id is not None else min(head, after + scan_window)
    entries: list[AuditEntry] = []
    reached = after
    context = _Context(store)
    while reached < stop and len(entries) < limit:
        rows = _select(store, where, reached, stop)
        if len(rows) < CHUNK:
            reached = stop  # nothing else matches up to ``stop``
        for position, event in context.decode(rows):
            entry = context.entry(position, event)
            if where.matches(entry):
                entries.append(entry)
                if len(entries) == limit:
                    reached = position
                    break
            if len(rows) == CHUNK:
                reached = position
    return AuditPage(entries, reached if reached < head else None, head)


def _select(store: EventStore, where: AuditFilter, after: int, stop: int) -> list[Any]:
    conditions = [sql.SQL("notification_id > %s AND notification_id <= %s")]
    params: list[Any] = [after, stop]
    if where.task_id is not None:
        conditions.append(sql.SQL("originator_id = %s"))
        params.append(where.task_id)
    if where.types:
        conditions.append(sql.SQL("topic ~ %s"))
        params.append(f"[.:]({'|'.join(where.types)})$")
    query = sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {} "
        "WHERE {} ORDER BY notification_id LIMIT {}"
    ).format(
        sql.Identifier(store.schema, EVENTS_TABLE),
        sql.SQL(" AND ").join(conditions),
        sql.Literal(CHUNK),
    )
    with store.recorder.datastore.get_connection() as conn:
        return conn.execute(query, params).fetchall()


class _Context:
    """Decodes rows and knows, per task, its owner and the worker of each attempt, read from
    the log (one query per chunk for the tasks not seen yet)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.owners: dict[UUID, str] = {}
        self.workers: dict[tuple[UUID, int], str] = {}

    def decode(self, rows: Sequence[Any]) -> list[tuple[int, Event]]:
        decoded = [(row["notification_id"], self._event(row)) for row in rows]
        self._load({e.originator_id for _, e in decoded if is_task_event(e)} - set(self.owners))
        return decoded

    def entry(self, position: int, event: Event) -> AuditEntry:
        task = event.originator_id
        attempt = getattr(event, "attempt", None)
        worker = self.workers.get((task, attempt)) if isinstance(attempt, int) else None
        principal, actor = attribute(event, self.owners.get(task), worker)
        qualname = type(event).__qualname__
        return AuditEntry(
            position=position,
            time=event.timestamp,
            type=kind(event),
            aggregate=qualname.split(".", 1)[0],
            subject_id=task,
            version=event.originator_version,
            principal=principal,
            actor=actor,
            data={k: v for k, v in vars(event).items() if k not in _META},
        )

    def _load(self, tasks: Iterable[UUID]) -> None:
        ids = list(tasks)
        if not ids:
            return
        query = sql.SQL(
            "SELECT originator_id, originator_version, topic, state FROM {} "
            "WHERE originator_id = ANY(%s) AND topic = ANY(%s)"
        ).format(sql.Identifier(self.store.schema, EVENTS_TABLE))
        with self.store.recorder.datastore.get_connection() as conn:
            rows = conn.execute(query, (ids, _CONTEXT_TOPICS)).fetchall()
        for row in rows:
            event: Any = self._event(row)
            if isinstance(event, Task.TaskEnqueued):
                self.owners[event.originator_id] = event.principal
            else:
                self.workers[(event.originator_id, event.attempt)] = event.worker
        for task in ids:
            self.owners.setdefault(task, SYSTEM)  # no TaskEnqueued found: never ask again

    def _event(self, row: Any) -> Event:
        stored = StoredEvent(
            originator_id=row["originator_id"],
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=bytes(row["state"]),
        )
        return self.store.to_event(stored)
