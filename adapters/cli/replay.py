"""``ledger replay``: rebuild the learning dataset from the event log alone into a file
(JSONL, CSV or Parquet), with a progress bar."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from adapters.cli import render
from adapters.dataset.formats import FORMATS, format_for, require_parquet
from adapters.dataset.replay import LogBound, Replay, RowFilter, parse_bound
from adapters.runtime import Runtime

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
    replay.add_argument("--format", choices=FORMATS, help="default: from the extension of --out")
    replay.add_argument("--type", dest="task_type", help="only attempts of this task type")
    replay.add_argument(
        "--since",
        metavar="POSITION|TIME",
        help="only attempts ended after this position, or finished at or after this time",
    )
    return replay


def replay_options(options: argparse.Namespace) -> tuple[str, LogBound | None, RowFilter]:
    """The format, bound and filter of ``ledger replay``; ``InvalidQuery`` on bad input."""
    fmt = format_for(options.out, options.format)
    if fmt == "parquet":
        require_parquet()
    until = parse_bound(options.until, "--until") if options.until is not None else None
    since = parse_bound(options.since, "--since") if options.since is not None else None
    return fmt, until, RowFilter(options.task_type, since)


def cmd_replay(rt: Runtime, options: argparse.Namespace) -> None:
    fmt, until, row_filter = replay_options(options)
    replay = Replay(rt.store, until, row_filter)
    with Progress(
        TextColumn("replaying the log"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=render.console,
        transient=False,
    ) as bar:
        job = bar.add_task("replay", total=max(replay.end, 1))

        def advance(position: int, end: int) -> None:
            bar.update(job, completed=position, total=max(end, 1))

        replay.write_file(options.out, fmt, progress=advance)
    render.console.print(
        f"{options.out}: {replay.rows} attempts ({fmt}) from {replay.events} task events, "
        f"log replayed to position {replay.position}"
    )
