"""``ledger audit``: verify the event log against its hash chain, and review who did what when.

``ledger audit verify`` catches the audit chain up, then recomputes it from the stored
events: exit status 0 when the log is intact, 1 with the first altered position otherwise.
``ledger audit log`` lists the global log (or one task's history) with filters.
"""

from __future__ import annotations

import argparse
import dataclasses

from rich.table import Table

from execution_ledger.adapters.cli import render
from execution_ledger.adapters.cli.parsers import (
    add_audit_parser as add_audit_parser,  # re-exported
)
from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.ledger_reads import AuditEntry, AuditFilter
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import InvalidQuery
from execution_ledger.domain.moments import parse_moment


def cmd_audit(rt: Runtime, options: argparse.Namespace) -> int:
    """Run ``ledger audit ACTION``; returns the exit status."""
    if options.action == "verify":
        return _verify(rt, options)
    return _log(rt, options)


def _verify(rt: Runtime, options: argparse.Namespace) -> int:
    source: list[str] = []

    def read_url() -> str:  # the replica once it holds the whole log, else the primary
        name, url = rt.reads.whole_log_url()
        source.append(name)
        return url

    report = rt.verify_audit_chain(read_url)
    # With a replica configured, which database was read.
    read_from = {"read_from": source[0]} if rt.reads.has_replica() and source else {}
    if options.json:
        print(render.to_json(dataclasses.asdict(report) | read_from))
    elif report.ok:
        where = f" (read from the {read_from['read_from']})" if read_from else ""
        render.console.print(f"ok: {report.detail}{where}")
    elif report.first_bad_position is None:
        render.console.print(f"[red]not verified[/]: {report.reason} ({report.detail})")
    else:
        render.console.print(
            f"[red]altered[/] at position {report.first_bad_position}: {report.reason} "
            f"({report.detail}; {report.checked} events before it verified)"
        )
    return 0 if report.ok else 1


def _log(rt: Runtime, options: argparse.Namespace) -> int:
    now = utc_now()
    where = AuditFilter(
        task_id=options.task,
        principal=options.principal,
        actor=options.actor,
        types=tuple(name for value in options.type for name in value.split(",") if name),
        since=parse_moment(options.since, "--since", now),
        until=parse_moment(options.until, "--until", now),
    )
    if options.limit < 1 or options.after < 0:
        raise InvalidQuery("--limit must be at least 1 and --after not negative")
    page = rt.reads.audit_events(where, after=options.after, limit=options.limit)
    if options.json:
        events = [dataclasses.asdict(e) for e in page.entries]
        print(render.to_json({"events": events, "next_after": page.next_after, "head": page.head}))
        return 0
    render.console.print(_table(page.entries))
    if page.next_after is not None:
        render.console.print(f"more: ledger audit log ... --after {page.next_after}")
    return 0


def _table(entries: list[AuditEntry]) -> Table:
    table = Table(header_style="bold")
    for column in ("position", "time", "event", "subject", "principal", "actor"):
        table.add_column(column, no_wrap=True)  # these stay whole; ``data`` wraps
    table.add_column("data")
    for entry in entries:
        data = render.compact_json(entry.data)
        table.add_row(
            str(entry.position),
            entry.time.strftime("%Y-%m-%d %H:%M:%S"),
            entry.type,
            str(entry.subject_id),
            entry.principal,
            entry.actor,
            data if len(data) <= 100 else data[:97] + "...",
        )
    return table
