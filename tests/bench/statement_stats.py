"""Where PostgreSQL's time goes during a benchmark's measured stretch, by statement, from
``pg_stat_statements`` (``bench_worker --statements``).

The extension needs ``shared_preload_libraries = 'pg_stat_statements'``, a restart and
``CREATE EXTENSION pg_stat_statements`` in the database, so a benchmark never sets it up:
where it is missing, ``StatementStats.start()`` says so and the report is left out. It
counts every database of the server: run nothing else meanwhile. Execution time only (not
parsing, planning or the commit's WAL flush).

Each statement is put with the side that sends it: the projections (their tables, their
reads of the log, their positions and the horizon their reads take) or the worker and
everything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from tests.bench.common import print_columns

# Statements of the projection process: its tables, its reads, its bookkeeping.
_PROJECTION_STATEMENT = re.compile(
    r"task_view|readiness_nodes|readiness_edges|attempt_dataset|audit_chain|audit_undecodable"
    r"|projection_positions|ledger_log_horizon|WHERE notification_id > ",
)
TOP = 12


@dataclass(frozen=True)
class Statement:
    text: str
    milliseconds: float
    calls: int
    rows: int

    @property
    def projections(self) -> bool:
        return bool(_PROJECTION_STATEMENT.search(self.text))


class StatementStats:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.available = False

    def start(self) -> None:
        """Forget what was counted so far (if the extension is loaded here)."""
        try:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                conn.execute("SELECT pg_stat_statements_reset()")
            self.available = True
        except psycopg.Error as error:
            message = str(error).splitlines()[0]
            print(f"(no statement report: pg_stat_statements is not set up here: {message})")
            self.available = False

    def stop(self) -> list[Statement]:
        """What each statement cost since ``start()``, costliest first."""
        if not self.available:
            return []
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            rows = conn.execute(
                "SELECT query, total_exec_time, calls, rows FROM pg_stat_statements "
                "WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC"
            ).fetchall()
        return [
            Statement(
                " ".join(row["query"].split()), row["total_exec_time"], row["calls"], row["rows"]
            )
            for row in rows
        ]


def print_statements(label: str, statements: list[Statement], tasks: int) -> None:
    """The costliest statements, and the projections' share of the server's time."""
    if not statements:
        return
    total = sum(s.milliseconds for s in statements)
    projections = sum(s.milliseconds for s in statements if s.projections)
    print(
        f"{label}: PostgreSQL ran statements for {1000 * total / tasks:,.0f} us a task, "
        f"{100 * projections / total:.0f} % of it the projections'"
    )
    lines = [("share", "us a task", "calls", "us a row", "side", "statement")]
    for statement in statements[:TOP]:
        lines.append(
            (
                f"{100 * statement.milliseconds / total:.1f} %",
                f"{1000 * statement.milliseconds / tasks:,.1f}",
                f"{statement.calls:,}",
                f"{1000 * statement.milliseconds / max(statement.rows, 1):,.1f}",
                "projections" if statement.projections else "worker",
                statement.text[:70],
            )
        )
    print_columns(lines)
