"""Replay: the learning dataset rebuilt from the event log alone, streamed page by page
through ``projections.attempt_fold.AttemptFold`` into a file or an HTTP response.

Memory stays flat in the number of events: one page of events (5,000) is held at a time,
plus the fold's per-task facts (see docs/dataset.md). Rows are written as attempts finish.
The fold and the writers work on rows in the text form (``adapters/dataset/text_form.py``);
``Replay.pages`` gives them typed.

Bounds (``--until`` / ``?until=``):
- a log position ``P``: every event with position <= P (cut at the head of the log as it
  was when the replay started);
- a time ``T`` (ISO 8601 with a zone): every event before the first task event, in log
  order, whose timestamp is after ``T`` (positions commit in order but timestamps are the
  writers' clocks, so this rule, not "every event stamped <= T", keeps the replay a prefix
  of the log).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from uuid import UUID

from execution_ledger.adapters.dataset.formats import open_writer
from execution_ledger.adapters.dataset.log_reader import PageFolder, read_log
from execution_ledger.adapters.dataset.text_form import iso_seconds_between, iso_time, typed_row
from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.read_replica import whole_log_reads
from execution_ledger.adapters.retention.replay_pages import (
    archive_head_position,
    archived_pages,
    require_archive,
)
from execution_ledger.adapters.retention.segments import ArchiveDir
from execution_ledger.domain.errors import InvalidQuery
from execution_ledger.projections.attempt_fold import AttemptFold, AttemptRow

Progress = Callable[[int, int], None]  # (position reached, position the replay ends at)
CHUNK_BYTES = 256 * 1024
_POSITION = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class LogBound:
    """A log position or a time; exactly one is set."""

    position: int | None = None
    time: datetime | None = None

    def __str__(self) -> str:
        return str(self.position) if self.time is None else self.time.isoformat()


def parse_bound(text: str, option: str = "--until") -> LogBound:
    """``123`` (a log position) or an ISO 8601 time with a zone (``2026-11-25T15:00:00Z``)."""
    cleaned = text.strip()
    if _POSITION.fullmatch(cleaned):
        return LogBound(position=int(cleaned))
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise InvalidQuery(
            f"{option} must be a log position (a whole number) or an ISO 8601 time with a "
            f"zone, e.g. 2026-11-25T15:00:00+00:00; got {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise InvalidQuery(
            f"{option} needs a time zone, e.g. {cleaned}+00:00 or {cleaned}Z; got {text!r}"
        )
    return LogBound(time=moment)


@dataclass(frozen=True)
class RowFilter:
    """Which rows to write: one task type; rows after a position or finished from a time."""

    task_type: str | None = None
    since: LogBound | None = None

    def keeps(self, row: AttemptRow[str, str]) -> bool:
        """Whether to write ``row`` (in the text form)."""
        if self.task_type is not None and row.task_type != self.task_type:
            return False
        since = self.since
        if since is None:
            return True
        if since.time is not None:
            return row.finished_at >= self._since_time
        return row.position > (since.position or 0)

    @cached_property
    def _since_time(self) -> str:
        assert self.since is not None and self.since.time is not None
        return iso_time(self.since.time)


class Replay:
    """One replay of the log up to a bound, fixed when it is created."""

    def __init__(
        self,
        store: EventStore,
        until: LogBound | None = None,
        row_filter: RowFilter | None = None,
        *,
        fast: bool | None = None,
        archive: ArchiveDir | None = None,
    ) -> None:
        self.store = store
        self.row_filter = row_filter or RowFilter()
        self.fast = fast
        # The archived history (``adapters/retention/``) is read first, then the live log.
        self.archive = archive
        self.archived_to = archive_head_position(store)
        require_archive(archive, self.archived_to)  # refused before the first byte
        head = max(store.head_position(), self.archived_to)
        self.end = head if until is None or until.position is None else min(until.position, head)
        # The replica once it holds the log up to ``head``, else the primary.
        self.source, self.connections = whole_log_reads(store)
        self.deadline = None if until is None else until.time
        self.position = 0  # every event up to here has been folded
        self.events = 0  # task events folded
        self.rows = 0  # rows written (after the filter)

    def pages(self, progress: Progress | None = None) -> Iterator[list[AttemptRow[UUID, datetime]]]:
        """The rows each page of the log finishes, in log order (ids as UUIDs, times as
        datetimes)."""
        for rows in self.text_pages(progress):
            yield [typed_row(row) for row in rows]

    def text_pages(self, progress: Progress | None = None) -> Iterator[list[AttemptRow[str, str]]]:
        """The rows each page of the log finishes, in log order, in the text form."""
        keeps = self.row_filter.keeps
        everything = self.row_filter == RowFilter()
        deadline = None if self.deadline is None else iso_time(self.deadline)
        folder = PageFolder(AttemptFold(between=iso_seconds_between), deadline)
        archived = archived_pages(
            self.store, self.archive, self.archived_to, self.end, every_task_event=bool(deadline)
        )
        pages = itertools.chain(
            archived,
            read_log(
                self.store,
                self.end,
                after=self.archived_to,
                fast=self.fast,
                every_task_event=bool(deadline),
                connections=self.connections,
            ),
        )
        for page in pages:
            rows = folder.rows(page)
            self.events = folder.events
            if not everything:
                rows = [row for row in rows if keeps(row)]
            if folder.stopped_at is not None:
                self.position = self.end = folder.stopped_at
                yield self._kept(rows)
                if progress is not None:
                    progress(self.position, self.end)
                return
            self.position = page.last_position
            yield self._kept(rows)
            if progress is not None:
                progress(self.position, self.end)
        self.position = self.end

    def _kept(self, rows: list[AttemptRow[str, str]]) -> list[AttemptRow[str, str]]:
        self.rows += len(rows)
        return rows

    def write_file(self, out: Path, fmt: str, progress: Progress | None = None) -> None:
        """Write the dataset to ``out`` (through ``out.partial``, renamed when complete)."""
        partial = out.with_name(out.name + ".partial")
        try:
            with open(partial, "wb") as sink:
                writer = open_writer(fmt, sink)
                for rows in self.text_pages(progress):
                    writer.write(rows)
                writer.close()
            os.replace(partial, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()

    def chunks(self, fmt: str) -> Generator[bytes, None, None]:
        """The same bytes as ``write_file``, in chunks of about ``CHUNK_BYTES``."""
        buffer = ChunkBuffer()
        writer = open_writer(fmt, buffer)
        for rows in self.text_pages():
            writer.write(rows)
            if buffer.size >= CHUNK_BYTES:
                yield buffer.take()
        writer.close()
        last = buffer.take()
        if last:
            yield last


class ChunkBuffer:
    """A write-only binary stream whose contents are taken out as they come."""

    closed = False

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.size = 0
        self._written = 0

    def write(self, data: bytes) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self.size += len(chunk)
        self._written += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        return None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def close(self) -> None:
        return None

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts = []
        self.size = 0
        return data
