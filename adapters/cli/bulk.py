"""``ledger bulk cancel|retry|reprioritise|move``: act on every task that matches a filter,
as the local admin (docs/patterns.md, "Bulk actions").

The matches are counted first (with a sample of ids); ``--dry-run`` stops there. Otherwise
the command asks before it changes anything (``--yes`` skips the question; without a
terminal it must be given), records the action and carries it out in batches of 500 tasks,
one transaction each, with a progress bar. Tasks that moved on between the count and their
batch (ended, started) are skipped and counted. Ctrl-C stops between two batches: what was
changed stays changed, and the action is recorded as stopped.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from execution_ledger.adapters.cli.filter_options import add_task_filter_options, task_filter_of

if TYPE_CHECKING:  # the runtime, rich and PostgreSQL load only when the command runs
    from execution_ledger.adapters.bulk_actions import BulkPreview, BulkRequest
    from execution_ledger.adapters.runtime import Runtime
    from execution_ledger.domain.bulk import BulkAction

ACTIONS = {
    "cancel": "cancel every matching task that has not ended (a running attempt is stopped)",
    "retry": "run every matching failed, cancelled or skipped task again",
    "reprioritise": "give every matching task not yet started a new priority",
    "move": "move every matching task not yet started to another queue",
}


def add_bulk_parser(commands: Any) -> argparse.ArgumentParser:
    bulk: argparse.ArgumentParser = commands.add_parser(
        "bulk",
        help="cancel, retry, reprioritise or move every task matching a filter",
        description="Act on every task that matches a filter: counted first (--dry-run stops "
        "there), then changed in batches of 500 tasks with a progress bar. Each task's change "
        "is an event naming the bulk action; the action itself is recorded (who, what, how "
        "many). At least one filter is needed.",
    )
    actions = bulk.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in ACTIONS.items():
        action = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        add_task_filter_options(action)
        _add_action_options(action, name)
        action.add_argument(
            "--dry-run", action="store_true", help="count and sample the matches; change nothing"
        )
        action.add_argument(
            "--yes",
            action="store_true",
            help="do not ask before changing (needed without a terminal)",
        )
    return bulk


def _add_action_options(action: argparse.ArgumentParser, name: str) -> None:
    if name == "cancel":
        action.add_argument("--reason", default="", help="recorded with each cancel")
    elif name == "reprioritise":
        action.add_argument(
            "--priority", type=int, required=True, help="the new priority, -1000..1000"
        )
    elif name == "move":
        action.add_argument(
            "--to", dest="to_queue", required=True, metavar="QUEUE", help="a declared queue"
        )


def cmd_bulk(rt: Runtime, options: argparse.Namespace) -> int:
    from execution_ledger.adapters.bulk_actions import plan_bulk
    from execution_ledger.adapters.cli import render

    registry = rt.registry
    request = plan_bulk(
        registry,
        options.action,
        task_filter_of(registry, options),
        priority=getattr(options, "priority", None),
        queue=getattr(options, "to_queue", None),
        reason=getattr(options, "reason", ""),
    )
    rt.catch_up()  # the task view up to the log, so the count is current
    preview = rt.ledger.bulk_preview(request)
    render.console.print(_summary(request, preview))
    if options.dry_run or preview.matched == 0:
        render.console.print("dry run: nothing changed" if options.dry_run else "nothing to do")
        return 0
    if not options.yes and not _confirmed(request, preview):
        render.console.print("nothing changed")
        return 1
    action = _run_with_progress(rt, request)
    render.console.print(
        f"bulk action {action.id} {action.state}: {action.changed} changed, "
        f"{action.skipped} skipped (they had moved on or needed no change)"
    )
    return 0


def _summary(request: BulkRequest, preview: BulkPreview) -> str:
    from execution_ledger.adapters.task_filters import filter_json

    where = " ".join(f"{k}={v}" for k, v in filter_json(request.where).items())
    lines = [f"{preview.matched} tasks match {where}: {request.change.describe()}"]
    lines += [f"  {task_id}" for task_id in preview.sample]
    if preview.matched > len(preview.sample):
        lines.append(f"  ... and {preview.matched - len(preview.sample)} more")
    return "\n".join(lines)


def _confirmed(request: BulkRequest, preview: BulkPreview) -> bool:
    from execution_ledger.domain.errors import InvalidQuery

    what = f"{request.change.describe()} {preview.matched} tasks"
    if not sys.stdin.isatty():
        raise InvalidQuery(f"this would {what}; give --yes to confirm (or --dry-run)")
    answer = input(f"{what}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _run_with_progress(rt: Runtime, request: BulkRequest) -> BulkAction:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from execution_ledger.adapters.cli import render
    from execution_ledger.adapters.ledger import SYSTEM

    action = rt.ledger.bulk_request(request, SYSTEM)
    with Progress(
        TextColumn(f"{request.change.describe()}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[skipped]} skipped"),
        console=render.console,
    ) as bar:
        job = bar.add_task("bulk", total=max(action.matched, 1), skipped=0)

        def advance(now: BulkAction) -> None:
            done = now.changed + now.skipped
            bar.update(job, completed=done, total=max(now.matched, done, 1), skipped=now.skipped)

        return rt.ledger.bulk_run(action.id, progress=advance)
