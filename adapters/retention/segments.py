"""The archive directory: segments of the log as Parquet files, each with a JSON manifest.

Layout, object-store shaped (flat names, written once, never changed; copy it to a bucket
as it is)::

    ARCHIVE_DIR/SCHEMA/segments/000000000001-000000050000.parquet
    ARCHIVE_DIR/SCHEMA/segments/000000000001-000000050000.json

A segment holds every stored event with a position in ``first..last`` (both in its name,
zero-padded to 12 digits), in log order, as stored: ``position``, ``originator_id`` (text),
``originator_version``, ``topic``, ``state`` (the library's bytes), and ``chain_hash``, the
audit chain at that event (so verification names the first altered row). Segments are contiguous:
the next one starts at ``last + 1``, the first at 1. The manifest gives the range, the
event count, the SHA-256 of the Parquet file, and the audit chain's hash before the
segment (``previous_chain_hash``) and at its last event (``chain_hash``).

A file is written to ``NAME.partial``, fsync'ed, renamed, and the directory fsync'ed; the
manifest likewise, after the Parquet file. A segment exists once its manifest does: a
Parquet file without one is what a crash left, and is written again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from execution_ledger.domain.errors import LedgerError
from execution_ledger.domain.retention import RetentionPolicy

FORMAT = 1
_NAME = re.compile(r"^(\d{12})-(\d{12})\.json$")
READ_BATCH = 10_000


class ArchiveError(LedgerError):
    """The archive cannot be written or read as asked (missing pyarrow, a bad directory, a
    manifest that does not parse)."""

    code = "archive_error"


class ArchiveBusy(ArchiveError):
    """Another archival of the same schema is running (its turn comes next interval)."""

    code = "archive_busy"


@dataclass(frozen=True)
class StoredRow:
    """One event as stored in the log (what the audit chain hashes)."""

    position: int
    originator_id: UUID
    originator_version: int
    topic: str | None
    state: bytes | None
    chain_hash: bytes = b""  # the audit chain at this event (kept in the segment)


@dataclass(frozen=True)
class Manifest:
    """What a segment holds, and the chain hashes around it."""

    first_position: int
    last_position: int
    events: int
    sha256: str
    previous_chain_hash: str  # hex: the chain before ``first_position`` (zeros for the first)
    chain_hash: str  # hex: the chain at the segment's last event
    file: str
    format: int = FORMAT

    @property
    def stem(self) -> str:
        return segment_stem(self.first_position, self.last_position)


def configured_archive(policy: RetentionPolicy | None, schema: str) -> ArchiveDir | None:
    """The schema's archive under ``[retention] archive_dir`` (None when not configured)."""
    if policy is None or policy.archive_dir is None:
        return None
    return ArchiveDir(policy.archive_dir, schema)


def segment_stem(first: int, last: int) -> str:
    return f"{first:012d}-{last:012d}"


class ArchiveDir:
    """The segments of one schema under an archive directory."""

    def __init__(self, root: str | Path, schema: str) -> None:
        self.root = Path(root)
        self.segments = self.root / schema / "segments"

    def manifests(self) -> list[Manifest]:
        """Every complete segment's manifest, in position order."""
        if not self.segments.is_dir():
            return []
        found = []
        for path in self.segments.iterdir():
            if _NAME.match(path.name):
                found.append(self.read_manifest(path))
        return sorted(found, key=lambda m: m.first_position)

    def read_manifest(self, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Manifest(**data)
        except (OSError, ValueError, TypeError) as error:
            raise ArchiveError(f"cannot read the manifest {path}: {error}") from None

    def parquet_path(self, manifest: Manifest) -> Path:
        return self.segments / manifest.file

    def write_segment(
        self, rows: list[StoredRow], first: int, last: int, previous: bytes, chain: bytes
    ) -> Manifest:
        """Write ``rows`` (positions ``first..last``) as a segment and its manifest, each
        fsync'ed before the next step; returns the manifest."""
        self.segments.mkdir(parents=True, exist_ok=True)
        stem = segment_stem(first, last)
        path = self.segments / f"{stem}.parquet"
        _write_durably(path, parquet_bytes(rows))
        manifest = Manifest(
            first_position=first,
            last_position=last,
            events=len(rows),
            sha256=file_sha256(path),
            previous_chain_hash=previous.hex(),
            chain_hash=chain.hex(),
            file=path.name,
        )
        text = json.dumps(asdict(manifest), indent=2, sort_keys=True) + "\n"
        _write_durably(self.segments / f"{stem}.json", text.encode("utf-8"))
        return manifest

    def rows(self, manifest: Manifest) -> Iterator[StoredRow]:
        """The segment's rows, in log order (a Parquet file that does not read: ArchiveError)."""
        pq = _parquet()
        try:
            file = pq.ParquetFile(self.parquet_path(manifest))
            for batch in file.iter_batches(batch_size=READ_BATCH):
                columns = batch.to_pydict()
                yield from _stored_rows(columns)
        except (OSError, ValueError, KeyError) as error:
            raise ArchiveError(f"cannot read the segment {manifest.file}: {error}") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parquet_bytes(rows: Iterable[StoredRow]) -> bytes:
    pa = _arrow()
    pq = _parquet()
    listed = list(rows)
    table = pa.table(
        {
            "position": pa.array([r.position for r in listed], pa.int64()),
            "originator_id": pa.array([str(r.originator_id) for r in listed], pa.string()),
            "originator_version": pa.array([r.originator_version for r in listed], pa.int64()),
            "topic": pa.array([r.topic for r in listed], pa.string()),
            "state": pa.array([r.state for r in listed], pa.binary()),
            "chain_hash": pa.array([r.chain_hash for r in listed], pa.binary()),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def _stored_rows(columns: dict[str, list[Any]]) -> Iterator[StoredRow]:
    for position, originator, version, topic, state, chain in zip(
        columns["position"],
        columns["originator_id"],
        columns["originator_version"],
        columns["topic"],
        columns["state"],
        columns["chain_hash"],
        strict=True,
    ):
        yield StoredRow(position, UUID(originator), version, topic, state, chain)


def _write_durably(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` for good: written to ``path.partial``, fsync'ed, renamed over
    ``path``, and the directory fsync'ed (so the rename survives a crash too)."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _arrow() -> Any:
    try:
        import pyarrow
    except ImportError:  # pragma: no cover - pyarrow is installed with the parquet extra
        raise ArchiveError(
            "archiving writes Parquet and needs pyarrow: pip install 'execution-ledger[parquet]'"
        ) from None
    return pyarrow


def _parquet() -> Any:
    _arrow()
    import pyarrow.parquet

    return pyarrow.parquet
