"""``ledger schedules``: list the cron schedules (the registry file's and the run-time ones);
pause, resume and backfill any; create, update and delete run-time ones. The CLI acts as
``system`` (admin); each change is an event (``docs/events.md``)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING, Any

from execution_ledger.domain.errors import InvalidSchedule

if TYPE_CHECKING:  # the runtime and the renderer load only when the command runs
    from execution_ledger.adapters.runtime import Runtime
    from execution_ledger.adapters.schedules import ScheduleView

DESCRIPTION = """\
Cron schedules. Those of the registry file ([schedules.NAME]) are changed in the file and
may be paused, resumed and backfilled here; run-time schedules are created, updated and
deleted here (or over HTTP) and every node fires them from its next scheduler pass. A
run-time schedule may not take the name of a file schedule.
"""


def add_schedules_parser(commands: Any) -> argparse.ArgumentParser:
    schedules: argparse.ArgumentParser = commands.add_parser(
        "schedules",
        help="cron schedules: list; create, update, delete, pause, resume, backfill one",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = schedules.add_subparsers(dest="action", metavar="ACTION")
    for action in ("pause", "resume"):
        switch = actions.add_parser(action, help=f"{action} a schedule on every node")
        switch.add_argument("name", help="schedule name (see ledger schedules)")
    create = actions.add_parser("create", help="define a run-time schedule")
    create.add_argument("name", help="the new schedule's name (not one of the file's)")
    _add_definition_options(create, required=True)
    create.add_argument("--paused", action="store_true", help="define it paused")
    update = actions.add_parser(
        "update", help="change options of a run-time schedule (the others are kept)"
    )
    update.add_argument("name", help="a run-time schedule's name")
    _add_definition_options(update, required=False)
    delete = actions.add_parser("delete", help="delete a run-time schedule")
    delete.add_argument("name", help="a run-time schedule's name")
    backfill = actions.add_parser(
        "backfill",
        help="enqueue every tick of a time range (a tick enqueued before is not enqueued again)",
    )
    backfill.add_argument("name", help="schedule name (file or run-time)")
    backfill.add_argument(
        "--since", required=True, help="first moment, ISO 8601 with a zone (2026-03-01T00:00Z)"
    )
    backfill.add_argument("--until", required=True, help="last moment (included), ISO 8601")
    backfill.add_argument(
        "--dry-run", action="store_true", help="only count the ticks; enqueue nothing"
    )
    return schedules


def _add_definition_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--cron",
        required=required,
        help="five fields (minute hour day month weekday), or six with seconds last",
    )
    parser.add_argument(
        "--type", dest="task_type", required=required, help="the task type each tick enqueues"
    )
    parser.add_argument("--timezone", help="IANA zone the cron expression is read in (UTC)")
    parser.add_argument(
        "-a", "--arg", action="append", default=[], help="an arg as key=value (repeatable)"
    )
    parser.add_argument("--args", dest="args_json", help="the args as a JSON object")
    parser.add_argument(
        "--catch-up",
        choices=["none", "latest", "all"],
        help="after downtime: drop missed ticks (none, the default), fire the latest, or all",
    )
    parser.add_argument(
        "--max-catch-up", type=int, help="with --catch-up all, at most this many (1-1000; 10)"
    )
    parser.add_argument(
        "--overlap",
        choices=["allow", "skip", "queue_one"],
        help="a tick while the last run is queued or running: allow (default), skip it, "
        "or queue_one (at most one waiting run, started after the running one)",
    )


def cmd_schedules(rt: Runtime, options: argparse.Namespace) -> None:
    from execution_ledger.adapters.cli import render
    from execution_ledger.adapters.schedules import Schedules

    schedules = Schedules(rt.ledger)
    action = options.action
    if action == "create":
        spec = _definition(options)
        if options.paused:
            spec["paused"] = True
        schedules.define(options.name, spec)
    elif action == "update":
        _, changes = schedules.update(options.name, _definition(options))
        changed = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())
        render.console.print(f"{options.name}: {changed or 'nothing changed'}", markup=False)
    elif action == "delete":
        schedules.delete(options.name)
        render.console.print(f"{options.name}: deleted")
        return
    elif action == "backfill":
        _backfill(rt, options)
        return
    elif action == "pause":
        schedules.pause(options.name)
    elif action == "resume":
        schedules.resume(options.name)
    _print_schedules(schedules.all())


def _definition(options: argparse.Namespace) -> dict[str, Any]:
    from execution_ledger.adapters.cli.arguments import parse_args_option

    spec: dict[str, Any] = {
        key: value
        for key, value in (
            ("cron", options.cron),
            ("task_type", options.task_type),
            ("timezone", options.timezone),
            ("catch_up", options.catch_up),
            ("max_catch_up", options.max_catch_up),
            ("overlap", options.overlap),
        )
        if value is not None
    }
    if options.arg or options.args_json:
        spec["args"] = parse_args_option(options.args_json, options.arg)
    return spec


def _backfill(rt: Runtime, options: argparse.Namespace) -> None:
    from execution_ledger.adapters.cli import render
    from execution_ledger.adapters.schedules import Schedules

    since = _time(options.since, "--since")
    until = _time(options.until, "--until")
    result = Schedules(rt.ledger).backfill(options.name, since, until, dry_run=options.dry_run)
    if result.dry_run:
        render.console.print(
            f"{result.name}: {result.ticks} ticks in the range; {result.existing} enqueued "
            f"before, {result.ticks - result.existing} would be enqueued (dry run)"
        )
    else:
        render.console.print(
            f"{result.name}: {result.ticks} ticks in the range; {result.enqueued} enqueued, "
            f"{result.existing} enqueued before"
        )


def _time(text: str, option: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidSchedule(f"{option}: not an ISO 8601 time: {text!r}") from None


def _print_schedules(views: list[ScheduleView]) -> None:
    from execution_ledger.adapters.cli import render
    from execution_ledger.adapters.ledger import utc_now

    if not views:
        render.console.print("no schedules")
        return
    now = utc_now()
    for view in views:
        schedule = view.schedule
        state = "paused" if view.paused else f"next {schedule.next_fire(now).isoformat()}"
        skipped = f"  skipped {view.runs.skipped_ticks}" if view.runs.skipped_ticks else ""
        render.console.print(
            f"{schedule.name:<24} {view.source:<7} {schedule.cron:<16} {schedule.timezone:<16} "
            f"{schedule.task_type:<16} catch-up {schedule.catch_up.value:<6} "
            f"overlap {schedule.overlap.value:<9} {state}{skipped}",
            markup=False,
            soft_wrap=True,  # one line per schedule, whatever the terminal's width
        )
