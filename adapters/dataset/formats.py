"""Writing attempt rows as JSONL, CSV or Parquet, byte for byte the same for the same rows.

Every format has the fixed column order of ``projections.dataset.COLUMNS``; times are
written in UTC with microseconds (``2026-11-25T15:36:01.051610+00:00``); nothing depends on
the wall clock, the locale or the host. Parquet needs ``pyarrow`` (the ``parquet`` extra),
imported only when Parquet is asked for.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import IO, Any, Protocol

from domain.errors import InvalidQuery
from projections.dataset import COLUMNS, AttemptRow

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


class RowWriter(Protocol):
    def write(self, rows: Sequence[AttemptRow]) -> None: ...

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


def open_writer(fmt: str, sink: IO[bytes]) -> RowWriter:
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


def iso_time(moment: datetime) -> str:
    """``2026-11-25T15:36:01.051610+00:00``: UTC, always with microseconds."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


def _cells(row: AttemptRow) -> list[Any]:
    """The row's values as JSON-able cells: ids and times as text."""
    cells: list[Any] = list(row)
    cells[1] = str(row.task_id)
    for index in _TIME_INDEXES:
        value = cells[index]
        if value is not None:
            cells[index] = iso_time(value)
    return cells


_TIME_INDEXES = tuple(i for i, c in enumerate(COLUMNS) if c in _TIME_COLUMNS)
_FLOAT_INDEXES = tuple(i for i, c in enumerate(COLUMNS) if c in _FLOAT_COLUMNS)


class JsonLinesWriter:
    """One JSON object per line, keys in column order, compact separators, UTF-8 (the
    bytes ``json.dumps(..., separators=(",", ":"), ensure_ascii=False)`` gives, built
    column by column because that is three times faster)."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink

    def write(self, rows: Sequence[AttemptRow]) -> None:
        if not rows:
            return
        lines = [_json_line(row) for row in rows]
        lines.append("")
        self.sink.write("\n".join(lines).encode("utf-8"))

    def close(self) -> None:
        return None


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)  # type: ignore[no-any-return]


def _time(value: datetime | None) -> str:
    return "null" if value is None else '"' + iso_time(value) + '"'


def _number(value: float | None) -> str:
    if value is None:
        return "null"
    if not math.isfinite(value):
        raise ValueError(f"a dataset value is not a finite number: {value!r}")
    return repr(value)


def _json_line(row: AttemptRow) -> str:
    """``json.dumps(dict(zip(COLUMNS, cells)), separators=(",", ":"), ensure_ascii=False)``
    spelled out for the known columns (tests check the two agree)."""
    (
        position, task_id, attempt, task_type, adapter, queue, lane, principal, role, node,
        enqueued_at, ready_at, started_at, finished_at, queue_wait_s, run_s, outcome,
        error_class, timeout_kind, exit_code, http_status, args_bytes, result_bytes,
        dependencies, dag_depth,
    ) = row  # fmt: skip
    return (
        f'{{"position":{position:d},"task_id":"{task_id}","attempt":{attempt:d},'
        f'"task_type":{_text(task_type)},"adapter":{_text(adapter)},"queue":{_text(queue)},'
        f'"lane":{_text(lane)},"principal":{_text(principal)},"role":{_text(role)},'
        f'"node":{_text(node)},"enqueued_at":{_time(enqueued_at)},'
        f'"ready_at":{_time(ready_at)},"started_at":{_time(started_at)},'
        f'"finished_at":{_time(finished_at)},"queue_wait_s":{_number(queue_wait_s)},'
        f'"run_s":{_number(run_s)},"outcome":{_text(outcome)},'
        f'"error_class":{_text(error_class)},"timeout_kind":{_text(timeout_kind)},'
        f'"exit_code":{_number(exit_code)},"http_status":{_number(http_status)},'
        f'"args_bytes":{args_bytes:d},"result_bytes":{_number(result_bytes)},'
        f'"dependencies":{dependencies:d},"dag_depth":{dag_depth:d}}}'
    )


class CsvWriter:
    """A header line, then one line per row; empty cell for null; floats with 6 decimals;
    lines end in ``\\n``; quoting only where needed (the ``csv`` module's minimal quoting)."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer, lineterminator="\n")
        self._csv.writerow(COLUMNS)
        self._flush()

    def write(self, rows: Sequence[AttemptRow]) -> None:
        if not rows:
            return
        for row in rows:
            cells = _cells(row)
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

    def __init__(self, sink: IO[bytes], row_group: int = PARQUET_ROW_GROUP) -> None:
        pq = require_parquet()
        import pyarrow as pa

        self._pa = pa
        self.schema = parquet_schema()
        self.row_group = row_group
        self._pending: list[AttemptRow] = []
        self._writer = pq.ParquetWriter(
            sink, self.schema, compression="zstd", write_statistics=True
        )

    def write(self, rows: Sequence[AttemptRow]) -> None:
        self._pending.extend(rows)
        while len(self._pending) >= self.row_group:
            self._write_group(self._pending[: self.row_group])
            del self._pending[: self.row_group]

    def _write_group(self, rows: Sequence[AttemptRow]) -> None:
        columns = list(zip(*rows, strict=True))
        columns[1] = tuple(str(task_id) for task_id in columns[1])
        arrays = [
            self._pa.array(values, type=field.type)
            for values, field in zip(columns, self.schema, strict=True)
        ]
        self._writer.write_table(
            self._pa.Table.from_arrays(arrays, schema=self.schema), row_group_size=len(rows)
        )

    def close(self) -> None:
        if self._pending:
            self._write_group(self._pending)
            self._pending = []
        self._writer.close()
