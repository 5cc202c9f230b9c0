"""Verifying the archived history: every segment up to the database's archive head, in
order, with the audit chain recomputed over its rows from the previous segment's hash.

What is checked (``docs/retention.md``), the first difference stops the check:

- the segments are contiguous from position 1 up to the archive head (``archive-missing``:
  a segment was deleted, or the archive directory is another one or an older copy);
- each manifest's ``previous_chain_hash`` is the hash the segment before it ends at, and the
  last one's ``chain_hash`` is the database's archive head (``chain-broken``);
- each file's SHA-256 is its manifest's, and recomputing the chain over its rows gives each
  row's stored chain hash and the manifest's (``archive-altered``, at the first row that
  differs, else at the segment's first position);
- every event still live at or below the archive head (a queue's, a task not yet past
  retention) is byte for byte the archived one (``altered``), and archived (``inserted``);
  and no archived event of an aggregate that is still live is gone from the log
  (``missing``): an aggregate is removed whole or not at all.

Segments written past the archive head (a run that has not deleted yet) are not part of
the archived history yet and are not read: those events are all still live.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from execution_ledger.adapters.postgres.log_horizon import EVENTS_TABLE
from execution_ledger.adapters.retention.archive_sql import ArchiveHead
from execution_ledger.adapters.retention.segments import (
    ArchiveDir,
    ArchiveError,
    Manifest,
    StoredRow,
    file_sha256,
)
from execution_ledger.projections.audit_chain import (
    GENESIS,
    canonical_bytes,
    event_hash,
    next_chain_hash,
)


@dataclass(frozen=True)
class ArchiveCheck:
    """The archived history's verdict: ``checked`` events verified before ``position``."""

    ok: bool
    checked: int
    segments: int
    position: int | None = None
    reason: str = "ok"
    detail: str = ""


class _Bad(Exception):
    def __init__(self, position: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.position, self.reason, self.detail = position, reason, detail


def verify_archive(
    conn: psycopg.Connection[Any], schema: str, archive: ArchiveDir | None, head: ArchiveHead
) -> ArchiveCheck:
    """Check the archive up to ``head`` and the live events at or below it (``conn`` is the
    verification's snapshot)."""
    if archive is None:
        return ArchiveCheck(
            False,
            0,
            0,
            1,
            "archive-missing",
            f"the log up to position {head.position} is archived; set [retention] "
            "archive_dir to verify it",
        )
    retained, live_aggregates = _retained(conn, schema, head.position)
    state = _Walk(retained, live_aggregates)
    try:
        manifests = [m for m in archive.manifests() if m.last_position <= head.position]
        for manifest in manifests:
            state.segment(archive, manifest)
        state.finish(head)
    except _Bad as bad:
        return ArchiveCheck(
            False, state.checked, state.segments, bad.position, bad.reason, bad.detail
        )
    except ArchiveError as error:
        return ArchiveCheck(
            False, state.checked, state.segments, state.expected, "archive-altered", str(error)
        )
    detail = f"{state.checked} archived events in {state.segments} segments verified"
    return ArchiveCheck(True, state.checked, state.segments, None, "ok", detail)


def check_segment(archive: ArchiveDir, manifest: Manifest, previous: bytes) -> tuple[bytes, int]:
    """Recompute one segment's chain from ``previous``: its hash at the end and the position
    of its last event (raises ``ArchiveError`` naming the first row that differs)."""
    walk = _Walk({})
    walk.expected, walk.previous = manifest.first_position, previous
    try:
        walk.segment(archive, manifest)
    except _Bad as bad:
        raise ArchiveError(f"{bad.reason} at position {bad.position}: {bad.detail}") from None
    return walk.previous, walk.last


class _Walk:
    """The segments read in order, the chain carried from one to the next."""

    def __init__(
        self, retained: dict[int, bytes], live_aggregates: frozenset[UUID] = frozenset()
    ) -> None:
        self.retained = retained
        self.live_aggregates = live_aggregates
        self.previous = GENESIS
        self.expected = 1  # the first position of the next segment
        self.checked = 0
        self.segments = 0
        self.last = 0  # the last position read

    def segment(self, archive: ArchiveDir, manifest: Manifest) -> None:
        first, last = manifest.first_position, manifest.last_position
        if first != self.expected:
            raise _Bad(
                self.expected,
                "archive-missing",
                f"no archived segment holds positions {self.expected}..{first - 1}",
            )
        if manifest.previous_chain_hash != self.previous.hex():
            raise _Bad(first, "chain-broken", f"segment {manifest.stem} does not follow on")
        path = archive.parquet_path(manifest)
        if not path.is_file():
            raise _Bad(first, "archive-missing", f"the file {manifest.file} is gone")
        self.last = first - 1
        count = 0
        for row in archive.rows(manifest):
            count += 1
            self._row(row, last)
        if manifest.sha256 != file_sha256(path):
            raise _Bad(first, "archive-altered", f"{manifest.file} differs from its manifest")
        if count != manifest.events or self.previous.hex() != manifest.chain_hash:
            raise _Bad(
                first, "archive-altered", f"segment {manifest.stem} differs from its manifest"
            )
        self.expected = last + 1
        self.segments += 1

    def _row(self, row: StoredRow, last: int) -> None:
        if not self.last < row.position <= last:
            raise _Bad(row.position, "archive-altered", "an archived row is out of order")
        self.last = row.position
        canonical = canonical_bytes(
            row.position, row.originator_id, row.originator_version, row.topic, row.state
        )
        chain = next_chain_hash(self.previous, canonical)
        if chain != row.chain_hash:
            raise _Bad(
                row.position, "archive-altered", "the archived event differs from the one chained"
            )
        live = self.retained.pop(row.position, None)
        if live is None and row.originator_id in self.live_aggregates:
            raise _Bad(
                row.position,
                "missing",
                "an event of an aggregate still live below the archive head is gone from the log",
            )
        if live is not None and live != event_hash(canonical):
            raise _Bad(row.position, "altered", "the live event differs from its archived copy")
        self.previous = chain
        self.checked += 1

    def finish(self, head: ArchiveHead) -> None:
        if self.expected - 1 != head.position:
            raise _Bad(
                self.expected,
                "archive-missing",
                f"the archive ends at position {self.expected - 1}, the database's archive "
                f"head is {head.position}",
            )
        if self.previous != head.chain_hash:
            raise _Bad(head.position, "chain-broken", "the archive head differs from the archive's")
        if self.retained:
            position = min(self.retained)
            raise _Bad(
                position, "inserted", "a live event below the archive head was never archived"
            )


def _retained(
    conn: psycopg.Connection[Any], schema: str, through: int
) -> tuple[dict[int, bytes], frozenset[UUID]]:
    """The event hash of every live event at or below ``through`` (kept live: queues,
    tasks not past retention), and their aggregates: an aggregate is archived whole or not
    at all, so each of its archived events must still be live too."""
    cursor = conn.cursor(name="archive_retained", row_factory=psycopg.rows.tuple_row)
    cursor.itersize = 5_000
    cursor.execute(
        sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {} "
            "WHERE notification_id <= %s"
        ).format(sql.Identifier(schema, EVENTS_TABLE)),
        (through,),
    )
    hashes, aggregates = {}, set()
    for position, originator, version, topic, state in cursor:
        canonical = canonical_bytes(
            position, originator, version, topic, None if state is None else bytes(state)
        )
        hashes[position] = event_hash(canonical)
        aggregates.add(originator)
    cursor.close()
    return hashes, frozenset(aggregates)
