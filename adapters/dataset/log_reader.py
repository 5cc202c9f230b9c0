"""Reading the event log for a replay: pages of task events as text lines (or ``EventFacts``),
the next pages fetched while the current one is folded, and their folding into rows.

The fast path has PostgreSQL read the stored JSON (``json_to_record``, one parse per event,
on the server's core) and return a whole page as one text value: one line per task event,
tab-separated fields, only those the fold reads of that kind of event, already in the
replay's text form (``adapters/dataset/text_form.py``): ids as text, times as UTC ISO text
with microseconds, numbers as digits, text values as JSON string literals (so no tab or
newline is ever inside a field), ``null`` for none. Python splits the lines and calls the
fold's method for each kind of event: no per-column decoding, no UUID or datetime per event.
Sizes are the byte length of the stored JSON text of ``args`` and ``result``.

It is used when the store's mapper has no cipher and no compressor and uses the library's
JSON transcoder; a page the server cannot parse (the library writes ``NaN`` for a float NaN,
which is not JSON) is read through the library's mapper instead, as is every page otherwise.
``projections.event_facts.event_facts`` gives the same facts from domain events;
tests/adapters/test_replay.py compares the two byte for byte.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import psycopg
from eventsourcing import persistence
from eventsourcing.persistence import JSONTranscoder
from psycopg import sql

from execution_ledger.adapters.dataset.text_form import text_facts
from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.read_replica import LogConnections
from execution_ledger.projections.attempt_fold import AttemptFold, AttemptRow
from execution_ledger.projections.event_facts import EventFacts, event_facts

PAGE_SIZE = 5000
READ_AHEAD = 3
TASK_TOPIC = "domain.task:Task."
FOLDED = (
    "TaskEnqueued",
    "TaskUnblocked",
    "TaskStarted",
    "TaskSucceeded",
    "TaskFailed",
    "TaskTimedOut",
    "TaskRetryScheduled",
    "TaskCancelled",
    "TaskDebounced",
)
(
    ENQUEUED,
    UNBLOCKED,
    STARTED,
    SUCCEEDED,
    FAILED,
    TIMED_OUT,
    RETRY_SCHEDULED,
    CANCELLED,
    DEBOUNCED,
) = (TASK_TOPIC + name for name in FOLDED)
log = logging.getLogger(__name__)


_ISO_FORMAT = """'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'"""
# A stored time in the library's form, already UTC with microseconds (the ISO text is 32
# characters ending in +00:00), e.g. {"_type_":"datetime_iso","_data_":"2026-...+00:00"}.
_STORED_UTC = r"""'{"\_type\_":"datetime\_iso","\_data\_":"' || repeat('_', 26) || '+00:00"}'"""


def _time(column: str) -> str:
    """A stored time (a ``text`` column: the JSON object as stored) as ``iso_time`` text:
    cut out of the stored text when it already is UTC with microseconds, else formatted
    by the server (the session is in UTC)."""
    value = f'x."{column}"'
    return (
        f"CASE WHEN {value} LIKE {_STORED_UTC} THEN substr({value}, 36, 32) "
        f"ELSE to_char(({value}::json ->> '_data_')::timestamptz, {_ISO_FORMAT}) END"
    )


_FIELDS = {c: _time(c) for c in ("timestamp", "run_at", "retry_at")}

# One page of task events as one text: a line per event, tab-separated: position, topic,
# task id, time, then the fields of its kind in the order ``PageFolder`` reads them. Text
# values are ``json`` columns: a JSON string literal as ``escape_json`` writes it (the
# escapes of Python's ``json`` with ``ensure_ascii=False``), never a tab or a newline. An
# empty field is a null (``concat`` writes nulls as nothing). ``details`` values come as
# their JSON text; ``PageFolder`` keeps the whole numbers, as ``event_facts`` does.
_PAGE_QUERY = """
SELECT string_agg(concat(
    e.notification_id, E'\\t', e.topic, E'\\t', e.originator_id, E'\\t', {timestamp},
    CASE e.topic
    WHEN {enqueued} THEN concat(E'\\t',
        x.type_name, E'\\t', x.adapter, E'\\t', x.queue, E'\\t', x.lane, E'\\t',
        x.principal, E'\\t', x.role, E'\\t', x.initial_state, E'\\t', {run_at}, E'\\t',
        coalesce(octet_length(x.args::text), 0), E'\\t',
        CASE WHEN x.depends_on <> '[]' THEN (
            SELECT string_agg((d ->> '_data_')::uuid::text, ' ')
            FROM json_array_elements(x.depends_on::json) d
        ) END)
    WHEN {started} THEN concat(E'\\t', coalesce(x.attempt, 0), E'\\t', x.worker)
    WHEN {succeeded} THEN concat(E'\\t',
        coalesce(octet_length(x.result::text), 4), E'\\t',
        x.details -> 'exit_code', E'\\t', x.details -> 'http_status')
    WHEN {failed} THEN concat(E'\\t',
        x.error_class, E'\\t', x.details -> 'exit_code', E'\\t', x.details -> 'http_status')
    WHEN {timed_out} THEN concat(E'\\t', x.kind)
    WHEN {retry_scheduled} THEN concat(E'\\t', {retry_at})
    WHEN {debounced} THEN concat(E'\\t', {run_at})
    END), E'\\n' ORDER BY e.notification_id)
FROM (
    SELECT notification_id, originator_id, topic, state FROM {events}
    WHERE notification_id > %s AND notification_id <= %s AND {topics}
) e,
LATERAL json_to_record(convert_from(e.state, 'UTF8')::json) AS x(
    "timestamp" text, type_name json, adapter json, queue json, lane json, principal json,
    role json, initial_state json, run_at text, depends_on text, args json, attempt integer,
    worker json, error_class json, kind json, retry_at text, result json, details json
)
"""


def page_query(events: sql.Composable, every_task_event: bool) -> str:
    """The page query on the ``events`` table: the events the fold reads, or (for a time
    bound, which looks at every task event's time) every task event."""
    topics = (
        sql.SQL("topic LIKE {}").format(sql.Literal(TASK_TOPIC + "%%"))
        if every_task_event
        else sql.SQL("topic = ANY({})").format(sql.Literal([TASK_TOPIC + n for n in FOLDED]))
    )
    return (
        sql.SQL(_PAGE_QUERY)
        .format(
            events=events,
            topics=topics,
            enqueued=sql.Literal(ENQUEUED),
            started=sql.Literal(STARTED),
            succeeded=sql.Literal(SUCCEEDED),
            failed=sql.Literal(FAILED),
            timed_out=sql.Literal(TIMED_OUT),
            retry_scheduled=sql.Literal(RETRY_SCHEDULED),
            debounced=sql.Literal(DEBOUNCED),
            **{name: sql.SQL(expression) for name, expression in _FIELDS.items()},
        )
        .as_string(None)
    )


class LogPage(NamedTuple):
    """Task events of one page, and the last position the page covers: the page query's
    text, or (read through the library) ``EventFacts``."""

    text: str | None
    events: list[EventFacts[str, str]]  # in the text form
    last_position: int


def read_log(
    store: EventStore,
    until: int,
    *,
    after: int = 0,
    page_size: int = PAGE_SIZE,
    fast: bool | None = None,
    ahead: int = READ_AHEAD,
    every_task_event: bool = False,
    connections: LogConnections | None = None,
) -> Iterator[LogPage]:
    """Pages of task events with ``after < position <= until``, in log order: those the
    fold reads, or every task event.

    A page is a range of ``page_size`` positions (fewer events where the log has gaps);
    ``ahead`` pages are read at once on their own connections, so the server decodes the
    next pages while this thread folds the current one. ``connections``: where the pages
    are read (a replica's connections; the store's pool by default).
    """
    reader = LogReader(store, fast=fast, every_task_event=every_task_event)
    if connections is not None:
        reader.connections = connections
    starts = iter(range(after, until, page_size))
    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="replay-read") as pool:
        pending: deque[Future[LogPage]] = deque()

        def submit() -> None:
            start = next(starts, None)
            if start is not None:
                pending.append(pool.submit(reader.page, start, min(start + page_size, until)))

        for _ in range(ahead):
            submit()
        while pending:
            page = pending.popleft().result()
            submit()
            yield page


def can_read_fast(store: EventStore) -> bool:
    mapper = store.app.mapper
    return (
        mapper.cipher is None
        and mapper.compressor is None
        and type(mapper.transcoder) is JSONTranscoder
    )


class LogReader:
    def __init__(
        self, store: EventStore, fast: bool | None = None, every_task_event: bool = False
    ) -> None:
        self.store = store
        self.fast = can_read_fast(store) if fast is None else fast
        self.every_task_event = every_task_event
        self._query = page_query(store.table, every_task_event)
        self.connections: LogConnections = store.recorder.datastore.get_connection

    def page(self, after: int, until: int) -> LogPage:
        """The task events with ``after < position <= until``."""
        if self.fast:
            try:
                return self._page_from_sql(after, until)
            except (psycopg.DataError, persistence.DataError) as error:
                log.info("replay: events after %d read through the library (%s)", after, error)
        return self._page_from_library(after, until)

    def _page_from_sql(self, after: int, until: int) -> LogPage:
        with (
            self.connections() as conn,
            conn.transaction(),
            conn.cursor(row_factory=psycopg.rows.tuple_row) as cursor,
        ):
            # Times the server formats are in UTC.
            cursor.execute("SET LOCAL TimeZone TO 'UTC'")
            cursor.execute(self._query, (after, until), prepare=True)
            row = cursor.fetchone()
        return LogPage((row and row[0]) or "", [], until)

    def _page_from_library(self, after: int, until: int) -> LogPage:
        recorded = self.store.read(after, until - after, until)
        events = (event_facts(r.event, r.position) for r in recorded)
        folded = (e for e in events if e is not None)
        if not self.every_task_event:
            folded = (e for e in folded if e.name in FOLDED)
        return LogPage(None, [text_facts(e) for e in folded], until)


class _Literals(dict[str, str | None]):
    """JSON string literals from the page query as Python strings (an empty field is a
    null), remembered: the same few values (types, queues, principals, nodes) recur."""

    LIMIT = 10_000

    def __missing__(self, literal: str) -> str | None:
        if not literal:
            return None
        if literal[0] != '"':  # not a string: its JSON text
            value: str | None = literal
        elif "\\" in literal:
            value = json.loads(literal)
        else:
            value = literal[1:-1]
        if len(self) >= self.LIMIT:
            self.clear()
        self[literal] = value
        return value


class _Codes(dict[str, int | None]):
    """``details`` values' JSON text (an empty field: no such key) as what
    ``projections.event_facts.event_facts`` keeps: a whole number of at most 18 digits, else
    None; remembered, as exit codes and statuses recur."""

    LIMIT = 10_000

    def __missing__(self, text: str) -> int | None:
        digits = text[1:] if text[:1] == "-" else text
        code = int(text) if digits.isdigit() and len(digits) <= 18 else None  # ASCII in JSON
        if len(self) >= self.LIMIT:
            self.clear()
        self[text] = code
        return code


class PageFolder:
    """Folds pages of the log, in order, into rows in the text form, stopping before the
    first task event stamped after ``deadline`` (an ``iso_time`` text), if any."""

    def __init__(self, fold: AttemptFold, deadline: str | None = None) -> None:
        self.fold = fold
        self.deadline = deadline
        self.events = 0  # task events folded
        self.stopped_at: int | None = None  # the last position folded, once the deadline hit
        self._literals = _Literals()
        self._codes = _Codes()

    def rows(self, page: LogPage) -> list[AttemptRow[str, str]]:
        """The rows the page's events finish, in log order."""
        if page.text is None:
            return self._fold_facts(page.events)
        return self._fold_lines(page.text) if page.text else []

    def _fold_facts(self, events: list[EventFacts[str, str]]) -> list[AttemptRow[str, str]]:
        apply, deadline, rows = self.fold.apply, self.deadline, []
        for event in events:
            if deadline is not None and event.timestamp > deadline:
                self.stopped_at = event.position - 1
                break
            self.events += 1
            row = apply(event)
            if row is not None:
                rows.append(row)
        return rows

    def _fold_lines(self, text: str) -> list[AttemptRow[str, str]]:
        """The page query's lines, each given to the fold's method for its kind."""
        fold, deadline, literal, code = self.fold, self.deadline, self._literals, self._codes
        started, succeeded = fold.started, fold.succeeded
        rows: list[AttemptRow[str, str]] = []
        row: AttemptRow[str, str] | None
        lines = text.split("\n")
        for line in lines:
            f = line.split("\t")
            topic, timestamp = f[1], f[3]
            if deadline is not None and timestamp > deadline:
                self.stopped_at = int(f[0]) - 1
                self.events += lines.index(line)
                return rows
            if topic == STARTED:
                started(f[2], timestamp, int(f[4]), literal[f[5]])
                continue
            if topic == SUCCEEDED:
                row = succeeded(int(f[0]), f[2], timestamp, int(f[4]), code[f[5]], code[f[6]])
            elif topic == ENQUEUED:
                depends_on = f[13]
                fold.enqueued(
                    f[2],
                    timestamp,
                    literal[f[4]],
                    literal[f[5]],
                    literal[f[6]],
                    literal[f[7]],
                    literal[f[8]],
                    literal[f[9]],
                    literal[f[10]],
                    f[11] or None,
                    depends_on.split(" ") if depends_on else [],
                    int(f[12]),
                )
                continue
            elif topic == FAILED:
                row = fold.failed(int(f[0]), f[2], timestamp, literal[f[4]], code[f[5]], code[f[6]])
            elif topic in (RETRY_SCHEDULED, DEBOUNCED):  # a new start: ready from then
                fold.retry_scheduled(f[2], f[4] or None)
                continue
            elif topic == UNBLOCKED:
                fold.unblocked(f[2], timestamp)
                continue
            elif topic == TIMED_OUT:
                row = fold.timed_out(int(f[0]), f[2], timestamp, literal[f[4]])
            elif topic == CANCELLED:
                row = fold.cancelled(int(f[0]), f[2], timestamp)
            else:  # read for a time bound only
                continue
            if row is not None:
                rows.append(row)
        self.events += len(lines)
        return rows
