"""``ledger archive``: old stretches of the log to Parquet segments, then the aggregates past
retention out of the live tables.

One run, in this order (``docs/retention.md``):

1. **Recover.** Segments whose manifest ends past the database's archive head were written
   by a run that stopped before deleting: each is checked (its file, its chain recomputed
   and compared with the live ``audit_chain``) and taken as written.
2. **Choose how far.** ``through``: the last position of any task past retention (or
   refused request past its age), no further than ``--until`` nor than every projection
   has read. Everything in ``archived_to < position <= through`` is copied, whatever its
   aggregate: segments stay contiguous, so the chain runs through them unbroken.
3. **Write** the new segments (``segment_events`` events each at most), each fsync'ed, read
   back and its chain checked against ``audit_chain`` before the next.
4. **Delete**, in one transaction: the archive head moves to ``through``; the events at or
   below it of the tasks past retention (whole, and only if the task has no later event)
   and of old refused requests go through ``ledger_archive_delete``; their rows in the task
   view, readiness graph, dispatch queue, running attempts, idempotency keys and dataset
   tables go; the chain rows at or below ``through`` go (the head carries the chain on).

Events of everything else (queues, schedules, tasks not ended or not old enough) stay live
even where a segment also holds them: a later run deletes them once they qualify, with no
new segment. A crash anywhere leaves either no deletion (rerun: step 1 adopts the segments)
or all of it. ``--dry-run`` reports what would happen and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from execution_ledger.adapters.retention import archive_sql as q
from execution_ledger.adapters.retention.segments import (
    ArchiveBusy,
    ArchiveDir,
    ArchiveError,
    Manifest,
    StoredRow,
)
from execution_ledger.adapters.retention.verify import check_segment
from execution_ledger.domain.retention import RetentionPolicy
from execution_ledger.projections.audit_chain import GENESIS, canonical_bytes, next_chain_hash

Hook = Callable[[], None]


@dataclass
class ArchiveReport:
    """What a run did (or, with ``dry_run``, would do)."""

    dry_run: bool
    archived_to: int  # the archive head before the run
    through: int  # the archive head after it
    adopted: list[str] = field(default_factory=list)  # segments a stopped run left
    written: list[str] = field(default_factory=list)  # segments written now
    events_archived: int = 0
    tasks_removed: int = 0
    denials_removed: int = 0


class Archiver:
    """Archives one schema's log into an archive directory by a retention policy."""

    def __init__(
        self,
        database_url: str,
        schema: str,
        policy: RetentionPolicy,
        archive: ArchiveDir,
        clock: Callable[[], datetime],
        before_delete: Hook | None = None,
    ) -> None:
        self.database_url = database_url
        self.schema = schema
        self.policy = policy
        self.archive = archive
        self.clock = clock
        self.before_delete = before_delete  # tests: a crash between writing and deleting

    def run(self, until: int | None = None, dry_run: bool = False) -> ArchiveReport:
        """One archival (one at a time per schema: a second is refused while one runs)."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            if not q.try_archive_lock(conn, self.schema):
                raise ArchiveBusy("another archival of this schema is running")
            return self._run(conn, until, dry_run)

    def _run(
        self, conn: psycopg.Connection[Any], until: int | None, dry_run: bool
    ) -> ArchiveReport:
        head = q.read_head(conn, self.schema) or q.ArchiveHead(0, GENESIS)
        manifests = self._manifests(head)
        adopted = [m for m in manifests if m.last_position > head.position]
        report = ArchiveReport(dry_run, head.position, head.position)
        previous = head.chain_hash
        for manifest in adopted:
            previous = self._adopt(conn, manifest, previous)
            report.adopted.append(manifest.stem)
        archived_to = manifests[-1].last_position if manifests else 0
        now = self.clock()
        through = max(archived_to, self._target(conn, until, now))
        report.through = through
        if dry_run:
            return self._dry(conn, report, archived_to, through, now)
        written = self._write(conn, archived_to, through, previous)
        report.written = [m.stem for m in written]
        report.events_archived = sum(m.events for m in written)
        if self.before_delete is not None:
            self.before_delete()
        if through > 0:
            self._delete(conn, report, through, now)
        if report.tasks_removed or report.denials_removed:
            q.analyze(conn, self.schema)  # the planner sees the tables as they now are
        return report

    # -- the archive as the database knows it -------------------------------------------

    def _manifests(self, head: q.ArchiveHead) -> list[Manifest]:
        manifests = self.archive.manifests()
        expected = 1
        for manifest in manifests:
            if manifest.first_position != expected:
                raise ArchiveError(
                    f"the archive {self.archive.segments} has no segment for positions "
                    f"{expected}..{manifest.first_position - 1}"
                )
            expected = manifest.last_position + 1
        if expected - 1 < head.position:
            raise ArchiveError(
                f"the archive {self.archive.segments} ends at position {expected - 1} but the "
                f"database's archive head is {head.position}: wrong archive_dir, or an older "
                "copy of it"
            )
        at_head = [m for m in manifests if m.last_position == head.position]
        if head.position and (not at_head or at_head[0].chain_hash != head.chain_hash.hex()):
            raise ArchiveError(
                f"the archive's segment ending at {head.position} does not match the "
                "database's archive head: run ledger audit verify"
            )
        return manifests

    def _adopt(self, conn: psycopg.Connection[Any], manifest: Manifest, previous: bytes) -> bytes:
        """Check a segment a stopped run wrote; its end hash."""
        chain, last_event = check_segment(self.archive, manifest, previous)
        if q.chain_hash_at(conn, self.schema, last_event) != chain:
            raise ArchiveError(
                f"segment {manifest.stem} differs from the live audit chain: run ledger "
                "audit verify"
            )
        return chain

    # -- how far -------------------------------------------------------------------------

    def _target(self, conn: psycopg.Connection[Any], until: int | None, now: datetime) -> int:
        """The last position worth archiving: that of the newest event of any aggregate
        past retention, within the bounds."""
        bound = q.archivable_through(conn, self.schema)
        if until is not None:
            bound = min(bound, until)
        _, _, last = q.past_retention(conn, self.schema, self._rule(now, bound))
        return q.last_event_at_or_below(conn, self.schema, last)

    def _rule(self, now: datetime, through: int) -> q.PastRetention:
        return q.PastRetention(self.policy.cutoffs(now), self.policy.denial_cutoff(now), through)

    def _dry(
        self,
        conn: psycopg.Connection[Any],
        report: ArchiveReport,
        archived_to: int,
        through: int,
        now: datetime,
    ) -> ArchiveReport:
        report.events_archived = q.count_events(conn, self.schema, archived_to, through)
        tasks, denials, _ = q.past_retention(conn, self.schema, self._rule(now, through))
        report.tasks_removed, report.denials_removed = tasks, denials
        return report

    # -- writing -------------------------------------------------------------------------

    def _write(
        self, conn: psycopg.Connection[Any], after: int, through: int, previous: bytes
    ) -> list[Manifest]:
        """Segments for ``after < position <= through``, in one snapshot."""
        if through <= after:
            return []
        written = []
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            rows = q.stored_rows(conn, self.schema, after, through)
            first = after + 1
            for chunk in _chunks(rows, self.policy.segment_events):
                chained = list(self._chained(chunk, previous))
                last = chained[-1].position
                manifest = self._segment(conn, chained, first, last, previous)
                written.append(manifest)
                previous, first = bytes.fromhex(manifest.chain_hash), last + 1
        return written

    def _chained(self, rows: list[Any], previous: bytes) -> Iterator[StoredRow]:
        for position, originator, version, topic, state in rows:
            data = None if state is None else bytes(state)
            previous = next_chain_hash(
                previous, canonical_bytes(position, originator, version, topic, data)
            )
            yield StoredRow(position, originator, version, topic, data, previous)

    def _segment(
        self,
        conn: psycopg.Connection[Any],
        rows: list[StoredRow],
        first: int,
        last: int,
        previous: bytes,
    ) -> Manifest:
        chain = rows[-1].chain_hash
        if q.chain_hash_at(conn, self.schema, rows[-1].position) != chain:
            raise ArchiveError(
                f"the log up to position {last} differs from its audit chain: run ledger "
                "audit verify (nothing archived from there)"
            )
        manifest = self.archive.write_segment(rows, first, last, previous, chain)
        if check_segment(self.archive, manifest, previous) != (chain, rows[-1].position):
            raise ArchiveError(f"segment {manifest.stem} did not read back as written")
        return manifest

    # -- deleting ------------------------------------------------------------------------

    def _delete(
        self, conn: psycopg.Connection[Any], report: ArchiveReport, through: int, now: datetime
    ) -> None:
        """The head moves to ``through`` (and the chain rows below it go); then the
        aggregates past retention go in batches, each in its own transaction: a crash
        between two leaves every aggregate whole, and the next run goes on."""
        with conn.transaction():
            q.set_head(conn, self.schema, q.ArchiveHead(through, self._head_hash(through)))
            q.delete_chain_below(conn, self.schema, through)
        rule = self._rule(now, through)
        after = UUID(int=0)
        while batch := q.task_batch(conn, self.schema, rule, after, q.CHUNK):
            with conn.transaction():
                removed = set(q.delete_archived(conn, self.schema, through, batch))
                q.delete_live_rows(conn, self.schema, through, [t for t in batch if t in removed])
            report.tasks_removed += len(removed)
            after = batch[-1]
        position = 0
        while denials := q.denial_batch(conn, self.schema, rule, position, q.CHUNK):
            with conn.transaction():
                ids = [d for d, _ in denials]
                report.denials_removed += len(q.delete_archived(conn, self.schema, through, ids))
            position = denials[-1][1]
        with conn.transaction():
            q.delete_held_attempt_rows(conn, self.schema, through)

    def _head_hash(self, through: int) -> bytes:
        ending = [m for m in self.archive.manifests() if m.last_position == through]
        if not ending:
            raise ArchiveError(f"no archived segment ends at position {through}")
        return bytes.fromhex(ending[0].chain_hash)


def _chunks(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
