"""Shared pieces of the benchmarks: a fresh schema on the benchmark database (its settings
left in ``LEDGER_*`` variables, so child processes open the same ledger), the raw ceiling
(plain psycopg single-row INSERT + COMMIT into the same PostgreSQL), percentiles and a free
loopback port."""

from __future__ import annotations

import os
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

import psycopg
from psycopg import sql

from execution_ledger.adapters.postgres.embedded import start_embedded_postgres
from execution_ledger.adapters.runtime import Runtime, open_runtime

warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")


def database_url() -> str:
    return os.environ.get("LEDGER_DATABASE_URL") or start_embedded_postgres()


@contextmanager
def fresh_runtime(config_text: str | None = None) -> Iterator[Runtime]:
    """A runtime on a new schema, dropped afterwards. ``LEDGER_DATABASE_URL``,
    ``LEDGER_SCHEMA`` and ``LEDGER_CONFIG`` (the written registry, if any) name it, so
    processes started meanwhile (worker nodes, servers, a task's own ``open_runtime()``)
    open the same ledger."""
    url = database_url()
    schema = f"bench_{uuid4().hex[:12]}"
    os.environ["LEDGER_DATABASE_URL"] = url
    os.environ["LEDGER_SCHEMA"] = schema
    config = None
    if config_text is not None:
        config = Path(tempfile.mkdtemp()) / "bench.toml"
        config.write_text(config_text)
        os.environ["LEDGER_CONFIG"] = str(config)
    runtime = open_runtime(config, pool_size=4)
    try:
        yield runtime
    finally:
        runtime.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def raw_insert_rate(rows: int = 2000) -> float:
    """Rows per second of single-row INSERT + COMMIT with psycopg: the raw ceiling."""
    url = database_url()
    table = f"bench_raw_{uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id uuid PRIMARY KEY, body bytea)").format(
                sql.Identifier(table)
            )
        )
        try:
            insert = sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(sql.Identifier(table))
            started = time.perf_counter()
            for _ in range(rows):
                conn.execute(insert, (uuid4(), b"x" * 200))
            return rows / (time.perf_counter() - started)
        finally:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def print_columns(lines: Sequence[Sequence[str]]) -> None:
    """Rows of cells (a heading first) printed as left-aligned columns."""
    widths = [max(len(cell) for cell in column) for column in zip(*lines, strict=True)]
    for cells in lines:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())


def free_port() -> int:
    """A TCP port free on 127.0.0.1 a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
