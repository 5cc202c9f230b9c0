"""Reading the event log for a replay: pages of task events as text lines (or ``EventFacts``),
the next pages fetched while the current one is folded, and their folding into rows.

The fast path (its statement: ``adapters/postgres/replay_pages.py``) has PostgreSQL read the
stored JSON (``json_to_record``, one parse per event,
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

from eventsourcing.persistence import JSONTranscoder

from execution_ledger.adapters.dataset.text_form import text_facts
from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.read_replica import LogConnections
from execution_ledger.adapters.postgres.replay_pages import (
    CANCELLED,
    DEBOUNCED,
    ENQUEUED,
    FAILED,
    FOLDED,  # also read by adapters/retention/replay_pages.py
    RETRY_SCHEDULED,
    STARTED,
    SUCCEEDED,
    TIMED_OUT,
    UNBLOCKED,
    UNPARSED_PAGE,
    page_query,
    page_text,
)
from execution_ledger.adapters.postgres.replay_pages import (
    TASK_TOPIC as TASK_TOPIC,  # re-exported: adapters/retention/replay_pages.py reads it
)
from execution_ledger.projections.attempt_fold import AttemptFold, AttemptRow
from execution_ledger.projections.event_facts import EventFacts, event_facts

PAGE_SIZE = 5000
READ_AHEAD = 3
log = logging.getLogger(__name__)


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
            except UNPARSED_PAGE as error:
                log.info("replay: events after %d read through the library (%s)", after, error)
        return self._page_from_library(after, until)

    def _page_from_sql(self, after: int, until: int) -> LogPage:
        return LogPage(page_text(self.connections, self._query, after, until), [], until)

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
