"""Writing attempt rows as JSONL, CSV or Parquet, byte for byte the same for the same rows.

The rows are in the replay's text form (``adapters/dataset/text_form.py``): task ids and
times are written as they come, times in UTC with microseconds
(``2026-11-25T15:36:01.051610+00:00``). Every format has the fixed column order of
``projections.attempt_fold.COLUMNS``; nothing depends on the wall clock, the locale or the host.
Parquet needs ``pyarrow`` (the ``parquet`` extra), imported only when Parquet is asked for.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Protocol

from execution_ledger.domain.errors import InvalidQuery
from execution_ledger.projections.attempt_fold import COLUMNS, AttemptRow

FORMATS = ("jsonl", "csv", "parquet")
MEDIA_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
PARQUET_ROW_GROUP = 50_000
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_TIME_COLUMNS = frozenset({"enqueued_at", "ready_at", "started_at", "finished_at"})
_FLOAT_COLUMNS = frozenset({"queue_wait_s", "run_s"})


class MissingParquetSupport(InvalidQuery):
    """Parquet was asked for but pyarrow is not installed."""

    code = "parquet_unavailable"


class ByteSink(Protocol):
    """Where a writer puts its bytes: an open binary file, or ``replay.ChunkBuffer`` (which
    also answers what ``pyarrow`` asks of a file: ``tell``, ``flush``, ``closed``...)."""

    def write(self, data: bytes, /) -> int: ...


class RowWriter(Protocol):
    def write(self, rows: Sequence[AttemptRow[str, str]]) -> None: ...

    def close(self) -> None:
        """Write whatever the format needs at the end (CSV and JSONL: nothing)."""


def format_for(path: Path | None, explicit: str | None) -> str:
    """The format asked for, else the one the file name's extension names."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise InvalidQuery(f"unknown format {explicit!r} (known: {', '.join(FORMATS)})")
        return explicit
    if path is not None:
        found = _SUFFIXES.get(path.suffix.lower())
        if found is not None:
            return found
        raise InvalidQuery(
            f"cannot tell the format from {path.name!r}: give --format "
            f"({', '.join(FORMATS)}) or end the name in .jsonl, .csv or .parquet"
        )
    return "jsonl"


def open_writer(fmt: str, sink: ByteSink) -> RowWriter:
    if fmt == "jsonl":
        return JsonLinesWriter(sink)
    if fmt == "csv":
        return CsvWriter(sink)
    if fmt == "parquet":
        return ParquetRowWriter(sink)
    raise InvalidQuery(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")


def require_parquet() -> Any:
    """The ``pyarrow.parquet`` module, or a clear error naming the extra to install."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingParquetSupport(
            "Parquet output needs pyarrow: pip install 'execution-ledger[parquet]' "
            "(or use --format jsonl / csv)"
        ) from None
    return pq


_FLOAT_INDEXES = tuple(i for i, c in enumerate(COLUMNS) if c in _FLOAT_COLUMNS)


class JsonLinesWriter:
    """One JSON object per line, keys in column order, compact separators, UTF-8 (the
    bytes ``json.dumps(..., separators=(",", ":"), ensure_ascii=False)`` gives, built
    column by column because that is three times faster)."""

    def __init__(self, sink: ByteSink) -> None:
        self.sink = sink

    def write(self, rows: Sequence[AttemptRow[str, str]]) -> None:
        if not rows:
            return
        lines = [_json_line(row) for row in rows]
        lines.append("")
        self.sink.write("\n".join(lines).encode("utf-8"))

    def close(self) -> None:
        return None


def _json_line(row: AttemptRow[str, str]) -> str:
    """``json.dumps(dict(zip(COLUMNS, row)), separators=(",", ":"), ensure_ascii=False)``
    spelled out for the known columns of a row in the text form (tests check the two
    agree). Numbers are whole or the fold's float seconds, which are always finite."""
    (
        position, task_id, attempt, task_type, adapter, queue, lane, principal, role, node,
        enqueued_at, ready_at, started_at, finished_at, queue_wait_s, run_s, outcome,
        error_class, timeout_kind, exit_code, http_status, args_bytes, result_bytes,
        dependencies, dag_depth,
    ) = row  # fmt: skip
    text = encode_basestring
    return (
        f'{{"position":{position},"task_id":"{task_id}","attempt":{attempt},'
        f'"task_type":{text(task_type)},"adapter":{text(adapter)},"queue":{text(queue)},'
        f'"lane":{"null" if lane is None else text(lane)},'
        f'"principal":{text(principal)},"role":{text(role)},"node":{text(node)},'
        f'"enqueued_at":"{enqueued_at}",'
        f'"ready_at":{"null" if ready_at is None else text(ready_at)},'
        f'"started_at":"{started_at}","finished_at":"{finished_at}",'
        f'"queue_wait_s":{"null" if queue_wait_s is None else repr(queue_wait_s)},'
        f'"run_s":{run_s!r},"outcome":"{outcome}",'
        f'"error_class":{"null" if error_class is None else text(error_class)},'
        f'"timeout_kind":{"null" if timeout_kind is None else text(timeout_kind)},'
        f'"exit_code":{"null" if exit_code is None else exit_code},'
        f'"http_status":{"null" if http_status is None else http_status},'
        f'"args_bytes":{args_bytes},'
        f'"result_bytes":{"null" if result_bytes is None else result_bytes},'
        f'"dependencies":{dependencies},"dag_depth":{dag_depth}}}'
    )


class CsvWriter:
    """A header line, then one line per row; empty cell for null; floats with 6 decimals;
    lines end in ``\\n``; quoting only where needed (the ``csv`` module's minimal quoting)."""

    def __init__(self, sink: ByteSink) -> None:
        self.sink = sink
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer, lineterminator="\n")
        self._csv.writerow(COLUMNS)
        self._flush()

    def write(self, rows: Sequence[AttemptRow[str, str]]) -> None:
        if not rows:
            return
        for row in rows:
            cells = list(row)
            for index in _FLOAT_INDEXES:
                value = cells[index]
                if value is not None:
                    cells[index] = f"{value:.6f}"
            self._csv.writerow(cells)
        self._flush()

    def _flush(self) -> None:
        self.sink.write(self._buffer.getvalue().encode("utf-8"))
        self._buffer.seek(0)
        self._buffer.truncate()

    def close(self) -> None:
        return None


def parquet_schema() -> Any:
    import pyarrow as pa

    text, big, small = pa.string(), pa.int64(), pa.int32()
    time = pa.timestamp("us", tz="UTC")
    types = {
        "position": big,
        "task_id": text,
        "attempt": small,
        "exit_code": big,
        "http_status": small,
        "args_bytes": big,
        "result_bytes": big,
        "dependencies": small,
        "dag_depth": small,
        "queue_wait_s": pa.float64(),
        "run_s": pa.float64(),
    }
    nullable = {
        "lane",
        "ready_at",
        "queue_wait_s",
        "error_class",
        "timeout_kind",
        "exit_code",
        "http_status",
        "result_bytes",
    }
    return pa.schema(
        [
            pa.field(
                column,
                time if column in _TIME_COLUMNS else types.get(column, text),
                nullable=column in nullable,
            )
            for column in COLUMNS
        ]
    )


class ParquetRowWriter:
    """Row groups of ``PARQUET_ROW_GROUP`` rows under a fixed schema (zstd; the Arrow
    schema in the metadata, no pandas metadata); the file's footer is written by ``close``."""

    def __init__(self, sink: ByteSink, row_group: int = PARQUET_ROW_GROUP) -> None:
        pq = require_parquet()
        import pyarrow as pa

        self._pa = pa
        self.schema = parquet_schema()
        self.row_group = row_group
        self._pending: list[AttemptRow[str, str]] = []
        self._writer = pq.ParquetWriter(
            sink, self.schema, compression="zstd", write_statistics=True
        )

    def write(self, rows: Sequence[AttemptRow[str, str]]) -> None:
        self._pending.extend(rows)
        while len(self._pending) >= self.row_group:
            self._write_group(self._pending[: self.row_group])
            del self._pending[: self.row_group]

    def _write_group(self, rows: Sequence[AttemptRow[str, str]]) -> None:
        pa = self._pa
        arrays = []
        for values, field in zip(zip(*rows, strict=True), self.schema, strict=True):
            if pa.types.is_timestamp(field.type):  # ISO text in UTC, parsed by Arrow
                arrays.append(pa.array(values, type=pa.string()).cast(field.type))
            else:
                arrays.append(pa.array(values, type=field.type))
        self._writer.write_table(
            pa.Table.from_arrays(arrays, schema=self.schema), row_group_size=len(rows)
        )

    def close(self) -> None:
        if self._pending:
            self._write_group(self._pending)
            self._pending = []
        self._writer.close()
