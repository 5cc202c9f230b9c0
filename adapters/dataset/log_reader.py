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
``projections.dataset.event_facts`` gives the same facts from domain events;
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

from adapters.dataset.text_form import text_facts
from adapters.postgres.event_store import EventStore
from projections.dataset import AttemptFold, AttemptRow, EventFacts, event_facts

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
)
log = logging.getLogger(__name__)


def _text(column: str) -> str:
    """A text value as a JSON string literal (``escape_json``: the escapes Python's
    ``json`` writes with ``ensure_ascii=False``), ``null`` for none."""
    return f"coalesce(to_json(x.{column})::text, 'null')"


def _time(column: str) -> str:
    """A stored time (``{"_type_": "datetime_iso", "_data_": "..."}``) as ``iso_time`` text:
    as stored when it already is (UTC, with microseconds), else formatted by the server
    (the session is in UTC); ``null`` for none."""
    value = f"""(x."{column}" ->> '_data_')"""
    return (
        f"coalesce(CASE WHEN length({value}) = 32 AND right({value}, 6) = '+00:00' "
        f"""THEN {value} ELSE to_char({value}::timestamptz, 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
        " END, 'null')"
    )


def _code(key: str) -> str:
    """A whole JSON number of at most 18 digits in ``details`` (what ``event_facts`` keeps)."""
    value = f"(x.details ->> '{key}')"
    return (
        f"coalesce(CASE WHEN json_typeof(x.details -> '{key}') = 'number' "
        f"AND {value} ~ '^-?[0-9]{{1,18}}$' THEN {value} END, 'null')"
    )


_FIELDS = {
    **{c: _text(c) for c in ("type_name", "adapter", "queue", "lane", "principal", "role")},
    **{c: _text(c) for c in ("initial_state", "worker", "error_class", "kind")},
    **{c: _time(c) for c in ("timestamp", "run_at", "retry_at")},
    **{c: _code(c) for c in ("exit_code", "http_status")},
}

# One page of task events as one text: a line per event, ``position, name, task id, time``
# and then the fields of its kind, in the order ``PageFolder`` reads them.
_PAGE_QUERY = """
SELECT string_agg(concat_ws(E'\t',
    e.notification_id, substr(e.topic, {prefix}), e.originator_id, {timestamp},
    CASE e.topic
    WHEN {enqueued} THEN concat_ws(E'\t',
        {type_name}, {adapter}, {queue}, {lane}, {principal}, {role}, {initial_state},
        {run_at}, coalesce(octet_length(x.args::text), 0),
        coalesce((SELECT string_agg((d ->> '_data_')::uuid::text, ' ')
                  FROM json_array_elements(x.depends_on) d), ''))
    WHEN {started} THEN concat_ws(E'\t', coalesce(x.attempt, 0), {worker})
    WHEN {succeeded} THEN concat_ws(E'\t',
        coalesce(octet_length(x.result::text), 4), {exit_code}, {http_status})
    WHEN {failed} THEN concat_ws(E'\t', {error_class}, {exit_code}, {http_status})
    WHEN {timed_out} THEN {kind}
    WHEN {retry_scheduled} THEN {retry_at}
    END), E'\n' ORDER BY e.notification_id)
FROM (
    SELECT notification_id, originator_id, topic, state FROM {events}
    WHERE notification_id > %s AND notification_id <= %s AND {topics}
) e,
LATERAL json_to_record(convert_from(e.state, 'UTF8')::json) AS x(
    "timestamp" json, type_name text, adapter text, queue text, lane text, principal text,
    role text, initial_state text, run_at json, depends_on json, args json, attempt integer,
    worker text, error_class text, kind text, retry_at json, result json, details json
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
            prefix=sql.Literal(len(TASK_TOPIC) + 1),
            events=events,
            topics=topics,
            enqueued=sql.Literal(TASK_TOPIC + "TaskEnqueued"),
            started=sql.Literal(TASK_TOPIC + "TaskStarted"),
            succeeded=sql.Literal(TASK_TOPIC + "TaskSucceeded"),
            failed=sql.Literal(TASK_TOPIC + "TaskFailed"),
            timed_out=sql.Literal(TASK_TOPIC + "TaskTimedOut"),
            retry_scheduled=sql.Literal(TASK_TOPIC + "TaskRetryScheduled"),
            **{name: sql.SQL(expression) for name, expression in _FIELDS.items()},
        )
        .as_string(None)
    )


class LogPage(NamedTuple):
    """Task events of one page, and the last position the page covers: the page query's
    text, or (read through the library) ``EventFacts``."""

    text: str | None
    events: list[EventFacts]
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
) -> Iterator[LogPage]:
    """Pages of task events with ``after < position <= until``, in log order: those the
    fold reads, or every task event.

    A page is a range of ``page_size`` positions (fewer events where the log has gaps);
    ``ahead`` pages are read at once on their own connections, so the server decodes the
    next pages while this thread folds the current one.
    """
    reader = LogReader(store, fast=fast, every_task_event=every_task_event)
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
            self.store.recorder.datastore.get_connection() as conn,
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


def _literal(value: str) -> str | None:
    """A JSON string literal (or ``null``) from the page query as a Python string."""
    if value == "null":
        return None
    if "\\" in value:
        return json.loads(value)  # type: ignore[no-any-return]
    return value[1:-1]


def _number(value: str) -> int | None:
    return None if value == "null" else int(value)


def _time(value: str) -> str | None:
    return None if value == "null" else value


class PageFolder:
    """Folds pages of the log, in order, into rows in the text form, stopping before the
    first task event stamped after ``deadline`` (an ``iso_time`` text), if any."""

    def __init__(self, fold: AttemptFold, deadline: str | None = None) -> None:
        self.fold = fold
        self.deadline = deadline
        self.events = 0  # task events folded
        self.stopped_at: int | None = None  # the last position folded, once the deadline hit

    def rows(self, page: LogPage) -> list[AttemptRow]:
        """The rows the page's events finish, in log order."""
        if page.text is None:
            return self._fold_facts(page.events)
        return self._fold_lines(page.text) if page.text else []

    def _fold_facts(self, events: list[EventFacts]) -> list[AttemptRow]:
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

    def _fold_lines(self, text: str) -> list[AttemptRow]:
        fold, deadline = self.fold, self.deadline
        enqueued, started, succeeded = fold.enqueued, fold.started, fold.succeeded
        rows: list[AttemptRow] = []
        row: AttemptRow | None
        folded = 0
        for line in text.split("\n"):
            f = line.split("\t")
            name, timestamp = f[1], f[3]
            if deadline is not None and timestamp > deadline:
                self.stopped_at = int(f[0]) - 1
                break
            folded += 1
            if name == "TaskStarted":
                started(f[2], timestamp, int(f[4]), _literal(f[5]))
                continue
            if name == "TaskSucceeded":
                row = succeeded(int(f[0]), f[2], timestamp, int(f[4]), _number(f[5]), _number(f[6]))
            elif name == "TaskEnqueued":
                enqueued(
                    f[2],
                    timestamp,
                    _literal(f[4]),
                    _literal(f[5]),
                    _literal(f[6]),
                    _literal(f[7]),
                    _literal(f[8]),
                    _literal(f[9]),
                    _literal(f[10]),
                    _time(f[11]),
                    f[13].split(" ") if f[13] else [],
                    int(f[12]),
                )
                continue
            elif name == "TaskFailed":
                row = fold.failed(
                    int(f[0]), f[2], timestamp, _literal(f[4]), _number(f[5]), _number(f[6])
                )
            elif name == "TaskRetryScheduled":
                fold.retry_scheduled(f[2], _time(f[4]))
                continue
            elif name == "TaskUnblocked":
                fold.unblocked(f[2], timestamp)
                continue
            elif name == "TaskTimedOut":
                row = fold.timed_out(int(f[0]), f[2], timestamp, _literal(f[4]))
            elif name == "TaskCancelled":
                row = fold.cancelled(int(f[0]), f[2], timestamp)
            else:  # read for a time bound only
                continue
            if row is not None:
                rows.append(row)
        self.events += folded
        return rows
