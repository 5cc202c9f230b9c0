"""The option trees of the ``ledger`` sub-commands that live in their own modules
(``audit``, ``db``, ``learn``, ``replay``).

Kept apart from the commands themselves, and importing nothing heavy, so that
``ledger --help`` and ``ledger --version`` answer without loading the runtime.
Each of those modules re-exports its ``add_*_parser``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from uuid import UUID

REPLAY_FORMATS = ("jsonl", "csv", "parquet")  # adapters.dataset.formats.FORMATS (tested)


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a task id: {text!r}") from None


AUDIT_EPILOG = """\
examples:
  ledger audit verify
  ledger audit log --task 0b9c...
  ledger audit log --principal alice --since 1d
  ledger audit log --type TaskCancelled,TaskRetryScheduled --since 2026-01-01T00:00:00+00:00
"""


def add_audit_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``audit`` (with ``verify`` and ``log``) to the ``ledger`` sub-commands."""
    audit = commands.add_parser(
        "audit",
        help="verify the log's hash chain; review who did what, when",
        epilog=AUDIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify", help="check the log against the chain: ok (exit 0) or where it was altered (1)"
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    log = actions.add_parser("log", help="the event log with who / what / when, oldest first")
    log.add_argument("--task", type=_uuid, help="one task's history (its full id)")
    log.add_argument("--principal", help="on whose authority (enqueuer, canceller, ...)")
    log.add_argument("--actor", help="who acted (a principal, a worker id, or 'system')")
    log.add_argument(
        "--type",
        action="append",
        default=[],
        metavar="EVENT",
        help="event type, e.g. TaskCancelled (comma-separated or repeated)",
    )
    log.add_argument("--since", help="ISO 8601 time with zone, or a duration ago (e.g. 2h)")
    log.add_argument("--until", help="ISO 8601 time with zone, or a duration ago")
    log.add_argument("--limit", type=int, default=100, help="at most this many events")
    log.add_argument("--after", type=int, default=0, help="continue after this log position")
    log.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return audit


DB_EPILOG = """\
The embedded PostgreSQL (used when no database URL is configured) keeps running after a
command exits, so the next one starts fast; status, stop and reset act on it (its data
directory: LEDGER_EMBEDDED_DIR, else the user data directory).

examples:
  ledger db grant ledger_service
  ledger db grant ledger_service --show     # also print the statements run
  ledger db status                          # the embedded server: data dir, pid, socket
  ledger db stop
  ledger db reset --yes                     # stop it and delete its data directory
"""


def add_db_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``db`` (with ``grant``) to the ``ledger`` sub-commands."""
    db = commands.add_parser(
        "db",
        help="grant a least-privilege role; status, stop or reset the embedded PostgreSQL",
        epilog=DB_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    grant = actions.add_parser(
        "grant",
        help="grant ROLE use of this schema: read and append the log, keep the read models; "
        "never edit the log",
    )
    grant.add_argument("role", help="an existing role that owns nothing here")
    grant.add_argument("--show", action="store_true", help="print the statements run")
    embedded = "(the embedded server only; LEDGER_DATABASE_URL is left alone)"
    status = actions.add_parser("status", help=f"is it running, where, since when {embedded}")
    stop = actions.add_parser("stop", help=f"stop it; the next command starts it {embedded}")
    reset = actions.add_parser(
        "reset", help=f"stop it and delete its data directory: every ledger in it {embedded}"
    )
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    for action in (status, stop, reset):
        action.set_defaults(without_runtime=True)  # must not start the server it acts on
    return db


def add_learn_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``learn`` (with ``status`` and ``rerun``) to the ``ledger`` sub-commands."""
    learn = commands.add_parser("learn", help="learn hooks: their positions; re-run them")
    actions = learn.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("status", help="each hook's delivery position against the dataset's")
    rerun = actions.add_parser(
        "rerun", help="deliver again every finished attempt after a log position"
    )
    rerun.add_argument("position", type=int, help="log position; 0 delivers everything again")
    rerun.add_argument("--type", dest="task_type", help="only this task type's hook")
    return learn


REPLAY_HELP = "rebuild the learning dataset from the event log into a file"
REPLAY_EPILOG = """\
--until and --since take a log position (e.g. 120000) or an ISO 8601 time with a zone
(e.g. 2026-11-25T15:00:00Z). A time bound stops before the first task event stamped after
it. The same log and bound always give the same bytes. See docs/dataset.md.

examples:
  ledger replay --out dataset.jsonl
  ledger replay --until 120000 --out dataset.parquet
  ledger replay --until 2026-11-25T15:00:00Z --format csv --out dataset.csv
"""


def add_replay_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``replay`` to the ``ledger`` command's subparsers."""
    replay = commands.add_parser(
        "replay",
        help=REPLAY_HELP,
        description=REPLAY_HELP + ".",
        epilog=REPLAY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("--out", type=Path, required=True, help="the file to write")
    replay.add_argument("--until", metavar="POSITION|TIME", help="last event to replay")
    replay.add_argument(
        "--format", choices=REPLAY_FORMATS, help="default: from the extension of --out"
    )
    replay.add_argument(
        "--kind",
        choices=("attempts", "workflow"),
        default="attempts",
        help="attempts: one row per finished attempt (default); workflow: one JSONL row per "
        "workflow event (children, signals, progress), --until a position only",
    )
    replay.add_argument("--type", dest="task_type", help="only attempts of this task type")
    replay.add_argument(
        "--since",
        metavar="POSITION|TIME",
        help="only attempts ended after this position, or finished at or after this time",
    )
    return replay
