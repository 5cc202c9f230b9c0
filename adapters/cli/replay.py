"""``ledger replay``: rebuild the learning dataset from the event log alone into a file
(JSONL, CSV or Parquet), with a progress bar."""

from __future__ import annotations

import argparse

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from execution_ledger.adapters.cli import render
from execution_ledger.adapters.cli.parsers import (
    add_replay_parser as add_replay_parser,  # re-exported
)
from execution_ledger.adapters.dataset.formats import format_for, require_parquet
from execution_ledger.adapters.dataset.replay import LogBound, RowFilter, parse_bound
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import InvalidQuery


def replay_options(options: argparse.Namespace) -> tuple[str, LogBound | None, RowFilter]:
    """The format, bound and filter of ``ledger replay``; ``InvalidQuery`` on bad input."""
    fmt = format_for(options.out, options.format)
    if fmt == "parquet":
        require_parquet()
    until = parse_bound(options.until, "--until") if options.until is not None else None
    since = parse_bound(options.since, "--since") if options.since is not None else None
    return fmt, until, RowFilter(options.task_type, since)


def cmd_replay(rt: Runtime, options: argparse.Namespace) -> None:
    if options.kind == "workflow":
        write_workflow_steps(rt, options)
        return
    fmt, until, row_filter = replay_options(options)
    replay = rt.dataset_replay(until, row_filter)
    if rt.reads.has_replica():
        render.console.print(f"reading the log from the {replay.source}")
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


def write_workflow_steps(rt: Runtime, options: argparse.Namespace) -> None:
    """``ledger replay --kind workflow``: the workflow steps of the log as JSONL (the lines
    of ``GET /v1/dataset?kind=workflow``), up to a log position."""
    if (options.format or "jsonl") != "jsonl" or options.out.suffix not in ("", ".jsonl"):
        raise InvalidQuery("the workflow steps are JSONL only (--out FILE.jsonl)")
    if options.task_type is not None or options.since is not None:
        raise InvalidQuery("--type and --since apply to attempts, not to the workflow steps")
    bound = parse_bound(options.until, "--until") if options.until is not None else None
    if bound is not None and bound.position is None:
        raise InvalidQuery("--until must be a log position for the workflow steps")
    rows = 0
    with options.out.open("wb") as out:
        for line in rt.workflow_steps(bound.position if bound else None):
            out.write(line)
            rows += 1
    render.console.print(f"{options.out}: {rows} workflow steps (jsonl)")
