"""``ledger archive [--dry-run] [--until POSITION] [--json]``: the log's old stretches to
Parquet segments under ``[retention] archive_dir``, then the tasks past retention out of the
live tables (``adapters/retention/archiver.py``, ``docs/retention.md``).

Run it as the schema's owner (or a role granted ``EXECUTE`` on ``ledger_archive_delete``):
the service role may not delete events.
"""

from __future__ import annotations

import argparse
from typing import Any

ARCHIVE_HELP = (
    "archive old log segments to Parquet and drop tasks past retention from the live tables"
)
ARCHIVE_EPILOG = """\
examples:
  ledger archive --dry-run          # what would be archived and removed
  ledger archive                    # by the [retention] ages of the configuration file
  ledger archive --until 500000     # no event after position 500000
"""


def add_archive_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``archive`` to the ``ledger`` command's subparsers."""
    archive = commands.add_parser(
        "archive",
        help=ARCHIVE_HELP,
        description=ARCHIVE_HELP + ".",
        epilog=ARCHIVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    archive.add_argument(
        "--dry-run", action="store_true", help="report what would be done; write nothing"
    )
    archive.add_argument(
        "--until", type=_position, metavar="POSITION", help="archive no event after this position"
    )
    archive.add_argument("--json", action="store_true", help="print the report as JSON")
    return archive


def _position(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a log position (a whole number from 1): {text!r}")
    return int(text)


def cmd_archive(rt: Any, options: argparse.Namespace) -> int:
    """Run one archival; returns the exit status."""
    import dataclasses

    import psycopg

    from execution_ledger.adapters.cli import render
    from execution_ledger.adapters.ledger import utc_now
    from execution_ledger.adapters.retention.archiver import Archiver
    from execution_ledger.adapters.retention.segments import ArchiveError, configured_archive
    from execution_ledger.domain.errors import ConfigError

    policy = rt.settings.config.retention
    archive = configured_archive(policy, rt.settings.schema)
    if policy is None or archive is None:
        raise ConfigError(
            "nothing to archive into: set [retention] archive_dir (and the ages per state) "
            "in the configuration file"
        )
    rt.catch_up()  # every projection at the head, so archiving is bounded by the log only
    archiver = Archiver(rt.database_url, rt.settings.schema, policy, archive, utc_now)
    try:
        report = archiver.run(until=options.until, dry_run=options.dry_run)
    except psycopg.errors.InsufficientPrivilege as error:
        raise ArchiveError(
            f"{error.diag.message_primary}: run ledger archive as the schema's owner "
            "(the service role may not delete events)"
        ) from None
    if options.json:
        print(render.to_json(dataclasses.asdict(report)))
        return 0
    render.console.print(_summary(report), highlight=False)
    return 0


def _summary(report: Any) -> str:
    verb = "would archive" if report.dry_run else "archived"
    lines = []
    if report.adopted:
        done = "would complete" if report.dry_run else "completed"
        lines.append(f"{done} {len(report.adopted)} segments an earlier run wrote")
    if report.through > report.archived_to:
        lines.append(
            f"{verb} positions {report.archived_to + 1}..{report.through}: "
            f"{report.events_archived} events"
            + ("" if report.dry_run else f" in {len(report.written)} segments")
        )
    else:
        lines.append(f"nothing new to archive (archived up to position {report.through})")
    removed = "would remove" if report.dry_run else "removed"
    lines.append(
        f"{removed} {report.tasks_removed} tasks and {report.denials_removed} refused requests "
        "from the live tables"
    )
    return "\n".join(lines)
