"""Reading the event log for a replay: pages of ``EventFacts``, the next pages fetched while
the current one is folded.

The fast path has PostgreSQL read the stored JSON (``json_to_record``, one parse per event,
on the server's core) and return only the fields the fold needs, typed: times as
``timestamptz``, ``depends_on`` as ``uuid[]``, sizes as the byte length of the stored JSON
text of ``args`` and ``result``. It is used when the store's mapper has no cipher and no
compressor and uses the library's JSON transcoder; a page the server cannot parse (the
library writes ``NaN`` for a float NaN, which is not JSON) is read through the library's
mapper instead, as is every page otherwise. ``projections.dataset.event_facts`` gives the
same facts from domain events; tests/adapters/test_replay.py compares the two.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import psycopg
from eventsourcing import persistence
from eventsourcing.persistence import JSONTranscoder
from psycopg import sql

from adapters.postgres.event_store import EventStore
from projections.dataset import EventFacts, event_facts

PAGE_SIZE = 5000
READ_AHEAD = 3
TASK_TOPIC = "domain.task:Task."
log = logging.getLogger(__name__)

# One page of events, the JSON read by the server. Columns in ``EventFacts`` order, then
# the topic.
_FACTS_QUERY = """
SELECT e.notification_id,
       substr(e.topic, {prefix}),
       e.originator_id,
       (x."timestamp" ->> '_data_')::timestamptz,
       x.type_name, x.adapter, x.queue, x.lane, x.principal, x.role, x.initial_state,
       (x.run_at ->> '_data_')::timestamptz,
       CASE WHEN x.depends_on IS NOT NULL THEN
           ARRAY(SELECT (d ->> '_data_')::uuid FROM json_array_elements(x.depends_on) d)
       END,
       octet_length(x.args::text),
       x.attempt, x.worker, x.error_class, x.kind,
       (x.retry_at ->> '_data_')::timestamptz,
       CASE WHEN e.topic = {succeeded} THEN coalesce(octet_length(x.result::text), 4) END,
       CASE WHEN x.details ->> 'exit_code' ~ '^-?[0-9]{{1,18}}$'
           THEN (x.details ->> 'exit_code')::bigint END,
       CASE WHEN x.details ->> 'http_status' ~ '^-?[0-9]{{1,18}}$'
           THEN (x.details ->> 'http_status')::bigint END,
       e.topic
FROM (
    SELECT notification_id, originator_id, topic, state FROM {events}
    WHERE notification_id > %s AND notification_id <= %s
) e,
LATERAL json_to_record(convert_from(e.state, 'UTF8')::json) AS x(
    "timestamp" json, type_name text, adapter text, queue text, lane text, principal text,
    role text, initial_state text, run_at json, depends_on json, args json, attempt integer,
    worker text, error_class text, kind text, retry_at json, result json, details json
)
ORDER BY e.notification_id
"""


class LogPage(NamedTuple):
    """Task events of one page, and the last position the page covers."""

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
) -> Iterator[LogPage]:
    """Pages of task events with ``after < position <= until``, in log order.

    A page is a range of ``page_size`` positions (fewer events where the log has gaps);
    ``ahead`` pages are read at once on their own connections, so the server decodes the
    next pages while this thread folds the current one.
    """
    reader = LogReader(store, fast=fast)
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
    def __init__(self, store: EventStore, fast: bool | None = None) -> None:
        self.store = store
        self.fast = can_read_fast(store) if fast is None else fast
        self._query = (
            sql.SQL(_FACTS_QUERY)
            .format(
                prefix=sql.Literal(len(TASK_TOPIC) + 1),
                succeeded=sql.Literal(TASK_TOPIC + "TaskSucceeded"),
                events=store.table,
            )
            .as_string(None)
        )

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
            conn.cursor(row_factory=psycopg.rows.tuple_row, binary=True) as cursor,
        ):
            # Binary results (half the client's cost of text); times in UTC, so the fold's
            # arithmetic never meets a DST zone.
            cursor.execute("SET LOCAL TimeZone TO 'UTC'")
            cursor.execute(self._query, (after, until), prepare=True)
            rows = cursor.fetchall()
        make = EventFacts._make
        events = [make(row[:-1]) for row in rows if row[-1].startswith(TASK_TOPIC)]
        return LogPage(events, until)

    def _page_from_library(self, after: int, until: int) -> LogPage:
        recorded = self.store.read(after, until - after, until)
        events = [event_facts(r.event, r.position) for r in recorded]
        return LogPage([e for e in events if e is not None], until)
