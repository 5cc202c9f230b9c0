"""A large ledger's old history, built fast but as the normal path would have left it: the
benchmark of retention (``bench_retention --bulk``) needs millions of events of ended tasks,
and writing them through ``EventStore.save`` and the projections takes hours on a small
machine.

A **template** of real tasks is written once through the normal path into a scratch schema
(``bench_retention.build_old``: enqueued, started, one in ten failed and retried, succeeded)
and projected by the real projections. The target schema then receives ``copies`` copies of
it, copy ``k`` (0-based) with:

- every id renamed: ``md5('<old id>:<k>')`` as a UUID, both in the events' ``originator_id``
  and wherever the stored ``state`` (the library's JSON) names an id (``uuid_hex``), and in
  every ``uuid`` column of the read models (the same function in SQL);
- every position moved by ``k * T`` (``T``: the template's events, which fill positions
  ``1..T``): events at ``k*T + 1 .. (k+1)*T``, in the template's order, and the read
  models' ``position`` / ``enqueued_position`` likewise;
- every time moved back by ``(copies - k) * step`` (``step``: ``span / copies``), in the
  state's ``datetime_iso`` values (re-encoded with ``isoformat()``, as the library does)
  and in every ``timestamptz`` column: the history spans ``span`` before the template's
  own time, in log order.

Events go in with ``COPY`` (binary); the **audit chain** is computed while they are written,
with ``projections.audit_chain.canonical_bytes`` / ``next_chain_hash`` (what the projection
computes in SQL and ``ledger audit verify`` recomputes), and copied into ``audit_chain``. The
read models (task view, readiness graph, dataset tables) are copied from the template's
with ``INSERT … SELECT`` over ``generate_series``; any other table the template filled makes
the build fail rather than be left empty. Then the position sequence and every projection's
position move to ``copies * T`` (the projections go on from there with the live work, as
after a catch-up) and the loaded tables are vacuumed and analysed, as autovacuum would have
done over a long history.

``check_rebuild`` (used by ``bench_retention --check-bulk``) rebuilds every read model from
the copied log with the real projections and compares them row for row with the copied ones.
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from execution_ledger.adapters.postgres.projection_runner import POSITIONS_TABLE
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.projections.audit_chain import (
    GENESIS,
    canonical_bytes,
    event_hash,
    next_chain_hash,
)

EVENTS = "ledger_events"
CHAIN = "audit_chain"
# Tables never copied: the log and the chain (written here), bookkeeping set here.
NOT_COPIED = {EVENTS, CHAIN, POSITIONS_TABLE, "ledger_schema_revision"}
# Columns holding log positions, moved by k * T.
POSITION_COLUMNS = {"position", "enqueued_position"}
COPIES_PER_COMMIT = 20
_VALUE = re.compile(rb'\{"_type_":"(datetime_iso|uuid_hex)","_data_":"([^"]*)"\}')


def renamed(old: UUID, copy: int) -> UUID:
    """Copy ``copy``'s id for a template id (the SQL side: ``md5(old::text || ':' || k)``)."""
    return UUID(hashlib.md5(f"{old}:{copy}".encode()).hexdigest())


@dataclass(frozen=True)
class TemplateEvent:
    """One stored template event, its state split around the values a copy changes."""

    position: int
    originator_id: UUID
    version: int
    topic: str
    pieces: tuple[bytes, ...]  # literal bytes, len(values) + 1 of them
    values: tuple[tuple[str, Any], ...]  # ("datetime", datetime) or ("uuid", UUID)


def split_state(state: bytes) -> tuple[tuple[bytes, ...], tuple[tuple[str, Any], ...]]:
    pieces, values, at = [], [], 0
    for match in _VALUE.finditer(state):
        kind, data = match.group(1), match.group(2).decode()
        pieces.append(state[at : match.start(2)])
        if kind == b"datetime_iso":
            values.append(("datetime", datetime.fromisoformat(data)))
        else:
            values.append(("uuid", UUID(data)))
        at = match.end(2)
    pieces.append(state[at:])
    return tuple(pieces), tuple(values)


def copied_state(event: TemplateEvent, copy: int, shift: timedelta) -> bytes:
    """The template event's state as copy ``copy`` stores it."""
    if not event.values:
        return event.pieces[0]
    parts = [event.pieces[0]]
    for (kind, value), piece in zip(event.values, event.pieces[1:], strict=True):
        if kind == "datetime":
            parts.append((value - shift).isoformat().encode())
        else:
            parts.append(renamed(value, copy).hex.encode())
        parts.append(piece)
    return b"".join(parts)


@dataclass
class BulkPlan:
    template_schema: str
    target_schema: str
    copies: int
    span: timedelta

    def shift(self, copy: int) -> timedelta:
        return (self.span / self.copies) * (self.copies - copy)


def read_template(conn: psycopg.Connection[Any], schema: str) -> list[TemplateEvent]:
    rows = conn.execute(
        sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {} ORDER BY notification_id"
        ).format(sql.Identifier(schema, EVENTS))
    ).fetchall()
    events = []
    for expected, (position, originator, version, topic, state) in enumerate(rows, start=1):
        if position != expected:
            raise RuntimeError(f"template positions are not 1..T (found {position})")
        pieces, values = split_state(bytes(state))
        events.append(TemplateEvent(position, originator, version, topic, pieces, values))
    return events


def _column_types(conn: psycopg.Connection[Any], schema: str, table: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        (sql.Identifier(schema, table).as_string(conn),),
    ).fetchall()
    return [(str(name), str(kind)) for name, kind in rows]


def write_events(url: str, plan: BulkPlan, template: list[TemplateEvent]) -> bytes:
    """Every copy's events and chain rows, by COPY on two connections; the chain's head."""
    size = len(template)
    previous = GENESIS
    with (
        psycopg.connect(url) as events_conn,
        psycopg.connect(url) as chain_conn,
    ):
        for conn in (events_conn, chain_conn):
            conn.execute("SET synchronous_commit = off")
        event_types = [t for _, t in _column_types(events_conn, plan.target_schema, EVENTS)]
        event_columns = [c for c, _ in _column_types(events_conn, plan.target_schema, EVENTS)]
        chain_types = _column_types(chain_conn, plan.target_schema, CHAIN)
        for first in range(0, plan.copies, COPIES_PER_COMMIT):
            last = min(plan.copies, first + COPIES_PER_COMMIT)
            with (
                events_conn.cursor().copy(
                    _copy_in(plan.target_schema, EVENTS, event_columns)
                ) as events_copy,
                chain_conn.cursor().copy(
                    _copy_in(plan.target_schema, CHAIN, [c for c, _ in chain_types])
                ) as chain_copy,
            ):
                events_copy.set_types(event_types)
                chain_copy.set_types([t for _, t in chain_types])
                for copy in range(first, last):
                    previous = _write_copy(
                        events_copy, chain_copy, event_columns, template, copy, plan, previous
                    )
            events_conn.commit()
            chain_conn.commit()
            print(f"  bulk: {last * size:,} events written", file=sys.stderr)
    return previous


def _copy_in(schema: str, table: str, columns: list[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )


def _write_copy(
    events_copy: Any,
    chain_copy: Any,
    event_columns: list[str],
    template: list[TemplateEvent],
    copy: int,
    plan: BulkPlan,
    previous: bytes,
) -> bytes:
    offset, shift = copy * len(template), plan.shift(copy)
    ids: dict[UUID, UUID] = {}
    for event in template:
        originator = ids.get(event.originator_id)
        if originator is None:
            originator = ids[event.originator_id] = renamed(event.originator_id, copy)
        position = offset + event.position
        state = copied_state(event, copy, shift)
        row = {
            "originator_id": originator,
            "originator_version": event.version,
            "topic": event.topic,
            "state": state,
            "notification_id": position,
        }
        events_copy.write_row([row[c] for c in event_columns])
        canonical = canonical_bytes(position, originator, event.version, event.topic, state)
        previous = next_chain_hash(previous, canonical)
        chain_copy.write_row(
            (position, originator, event.version, event.topic, event_hash(canonical), previous)
        )
    return previous


def copied_tables(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """The template's tables with rows, other than the log, the chain and bookkeeping."""
    names = [
        str(r[0])
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND table_type = 'BASE TABLE' ORDER BY table_name",
            (schema,),
        ).fetchall()
    ]
    filled = []
    for name in names:
        if name in NOT_COPIED:
            continue
        row = conn.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(schema, name))
        ).fetchone()
        if row and row[0]:
            filled.append(name)
    return filled


def _column_expression(name: str, kind: str, size: int, copies: int) -> sql.Composable:
    """The SQL giving copy ``k``'s value of a template column (``k``: the series)."""
    column = sql.Identifier("t", name)
    if kind == "uuid":
        return sql.SQL("md5({}::text || ':' || k::text)::uuid").format(column)
    if kind == "uuid[]":
        return sql.SQL(
            "CASE WHEN {c} IS NULL THEN NULL ELSE "
            "ARRAY(SELECT md5(u::text || ':' || k::text)::uuid FROM unnest({c}) u) END"
        ).format(c=column)
    if kind == "timestamp with time zone":
        return sql.SQL("{} - (%s::int - k) * %s::interval").format(column)
    if name in POSITION_COLUMNS:
        return sql.SQL("{} + k::bigint * {}").format(column, sql.Literal(size))
    return column


def copy_table(url: str, plan: BulkPlan, size: int, table: str) -> float:
    """Copy one read model's template rows into every copy; seconds taken."""
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute("SET synchronous_commit = off")
        columns = _column_types(conn, plan.template_schema, table)
        step = plan.span / plan.copies
        expressions, params = [], []
        for name, kind in columns:
            expressions.append(_column_expression(name, kind, size, plan.copies))
            if kind == "timestamp with time zone":
                params += [plan.copies, step]
        for first in range(0, plan.copies, COPIES_PER_COMMIT):
            last = min(plan.copies, first + COPIES_PER_COMMIT)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {target} ({names}) SELECT {values} FROM {source} t "
                    "CROSS JOIN generate_series(%s::int, %s::int) k ORDER BY k"
                ).format(
                    target=sql.Identifier(plan.target_schema, table),
                    names=sql.SQL(", ").join(sql.Identifier(n) for n, _ in columns),
                    values=sql.SQL(", ").join(expressions),
                    source=sql.Identifier(plan.template_schema, table),
                ),
                [*params, first, last - 1],
            )
            conn.commit()
    return time.perf_counter() - started


def set_positions(url: str, plan: BulkPlan, head: int) -> None:
    """The log's sequence and every projection's position at the bulk's last event."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "SELECT setval(%s, %s)",
            (
                sql.Identifier(plan.target_schema, f"{EVENTS}_notification_id_seq").as_string(conn),
                head,
            ),
        )
        names = conn.execute(
            sql.SQL("SELECT name, position FROM {}").format(
                sql.Identifier(plan.template_schema, POSITIONS_TABLE)
            )
        ).fetchall()
        for name, position in names:
            if position != head // plan.copies:
                raise RuntimeError(f"template projection {name} is at {position}, not its end")
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (name, position) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
                ).format(sql.Identifier(plan.target_schema, POSITIONS_TABLE)),
                (name, head),
            )


def vacuum(url: str, schema: str, tables: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table in tables:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(schema, table)))


@dataclass
class BulkReport:
    events: int
    template_events: int
    copies: int
    seconds: dict[str, float]


def copy_history(url: str, plan: BulkPlan) -> BulkReport:
    """Fill ``plan.target_schema`` (freshly created, empty) with the template's copies."""
    seconds: dict[str, float] = {}
    with psycopg.connect(url) as conn:
        template = read_template(conn, plan.template_schema)
        tables = copied_tables(conn, plan.template_schema)
    size = len(template)
    print(
        f"  bulk: {plan.copies} copies of {size:,} template events; tables {tables}",
        file=sys.stderr,
    )
    started = time.perf_counter()
    failures: list[BaseException] = []

    def read_models() -> None:
        try:
            for table in tables:
                seconds[f"copy {table}"] = copy_table(url, plan, size, table)
        except BaseException as error:  # re-raised below, in the caller's thread
            failures.append(error)

    worker = threading.Thread(target=read_models, name="bulk-read-models")
    worker.start()
    write_events(url, plan, template)
    seconds["events and chain"] = time.perf_counter() - started
    worker.join()
    if failures:
        raise failures[0]
    set_positions(url, plan, plan.copies * size)
    vacuumed = time.perf_counter()
    vacuum(url, plan.target_schema, [EVENTS, CHAIN, *tables])
    seconds["vacuum analyze"] = time.perf_counter() - vacuumed
    seconds["total"] = time.perf_counter() - started
    return BulkReport(plan.copies * size, size, plan.copies, seconds)


def compare_tables(url: str, schema: str, saved: str, tables: list[str]) -> dict[str, int]:
    """Rows that differ (either way) between ``schema``'s tables and their saved copies."""
    differ = {}
    with psycopg.connect(url) as conn:
        for table in tables:
            columns = sql.SQL(", ").join(
                sql.Identifier(n) for n, _ in _column_types(conn, schema, table)
            )
            live, kept = sql.Identifier(schema, table), sql.Identifier(saved, table)
            row = conn.execute(
                sql.SQL(
                    "SELECT (SELECT count(*) FROM (SELECT {c} FROM {a} EXCEPT ALL "
                    "SELECT {c} FROM {b}) x) + (SELECT count(*) FROM (SELECT {c} FROM {b} "
                    "EXCEPT ALL SELECT {c} FROM {a}) y)"
                ).format(c=columns, a=live, b=kept)
            ).fetchone()
            differ[table] = int(row[0]) if row else -1
    return differ


def check_rebuild(runtime: Runtime, tables: list[str]) -> dict[str, int]:
    """Rebuild every projection from the log and count rows that differ from the bulk's
    copies (all zero: the copied read models are what the projections make of the log)."""
    url, schema = runtime.database_url, runtime.settings.schema
    saved = f"{schema}_saved"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(saved)))
        for table in tables:
            conn.execute(
                sql.SQL("CREATE TABLE {} AS SELECT * FROM {}").format(
                    sql.Identifier(saved, table), sql.Identifier(schema, table)
                )
            )
    try:
        for runner in runtime.runners.values():
            runner.rebuild()
        runtime.catch_up()
        return compare_tables(url, schema, saved, tables)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(saved)))
