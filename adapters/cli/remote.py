"""``ledger --url URL COMMAND``: the task commands against a running service over HTTP
(``adapters/client``) instead of the database, for a machine that reaches the service but
not PostgreSQL. The token comes from ``--token-file`` or ``LEDGER_TOKEN`` (never a
command-line word, which other users can read in the process list).

Remote commands: ``enqueue`` (one task or ``--graph``), ``tasks``, ``show``, ``history``,
``cancel``, ``retry``, ``signal``, ``queues [pause|resume NAME]``. They print what the local
commands print. Task ids are whole over HTTP (a prefix needs the log). Any other command
names what it needs instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from execution_ledger.adapters.cli import render
from execution_ledger.adapters.cli.arguments import parse_args_option, parse_run_at
from execution_ledger.adapters.cli.signal import signal_data
from execution_ledger.adapters.client import LedgerClient
from execution_ledger.domain.errors import InvalidQuery, InvalidSubmission

Command = Callable[[LedgerClient, argparse.Namespace], None]


def token_of(options: argparse.Namespace) -> str | None:
    path: Path | None = getattr(options, "token_file", None)
    if path is not None:
        try:
            return path.read_text().strip() or None
        except OSError as error:
            raise InvalidQuery(f"--token-file {path}: {error.strerror}") from None
    return os.environ.get("LEDGER_TOKEN") or None


def run_remote(options: argparse.Namespace) -> int:
    """Run ``options.command`` against the service at ``options.url``."""
    command = COMMANDS.get(options.command)
    if command is None:
        raise InvalidQuery(
            f"'ledger {options.command}' works on the database, not over --url: run it where "
            f"LEDGER_DATABASE_URL reaches PostgreSQL (remote commands: {', '.join(COMMANDS)})"
        )
    with LedgerClient(options.url, token=token_of(options)) as client:
        command(client, options)
    return 0


def whole_id(ref: str) -> UUID:
    try:
        return UUID(ref)
    except ValueError:
        raise InvalidQuery(f"over --url give the whole task id, not a prefix ({ref!r})") from None


def cmd_enqueue(client: LedgerClient, options: argparse.Namespace) -> None:
    if options.graph:
        if options.type:
            raise InvalidSubmission("give a task type or --graph, not both")
        tasks = json.loads(options.graph.read_text())["tasks"]
        graph = client.enqueue_graph(tasks)
        render.console.print(f"enqueued {len(graph.tasks)} tasks atomically")
        for ref, task_id in graph.tasks.items():
            render.console.print(f"  {ref:<16} {task_id}")
        return
    if not options.type:
        raise InvalidSubmission("name a task type (ledger enqueue TYPE) or give --graph FILE")
    if options.debounce is not None or options.unique_for is not None:
        raise InvalidQuery("--debounce and --unique-for are not sent over --url yet")
    task = client.enqueue(
        options.type,
        parse_args_option(options.args_json, options.pairs),
        depends_on=options.depends_on or None,
        run_at=parse_run_at(options.run_at, options.delay, datetime.now(UTC)),
        queue=options.queue,
        priority=options.priority,
        lane=options.lane,
        idempotency_key=options.idempotency_key,
        tags=options.tag or None,
        singleton=options.singleton,
    )
    note = "" if task.created else "  (already enqueued: the task holding its key)"
    render.console.print(f"{task.id}  {task.type}  {task.state}{note}")


def cmd_tasks(client: LedgerClient, options: argparse.Namespace) -> None:
    page = client.tasks(
        state=options.state,
        type_name=options.type_name,
        queue=options.queue,
        lane=options.lane,
        tag=options.tag,
        since=options.since,
        until=options.until,
        text=options.text,
        limit=options.limit,
        cursor=options.cursor,
    )
    rows = [dict(t.raw) for t in page.tasks]
    if options.json:
        print(render.to_json({"tasks": rows, "next_cursor": page.next_cursor}))
    elif options.wide or not render.console.is_terminal:
        for line in render.task_lines(rows):
            print(line)
    else:
        render.console.print(render.task_table(rows))


def cmd_show(client: LedgerClient, options: argparse.Namespace) -> None:
    task = client.task(whole_id(options.task_id))
    if options.json:
        print(render.to_json(task.raw))
    else:
        render.console.print(render.task_details(dict(task.raw)))


def cmd_history(client: LedgerClient, options: argparse.Namespace) -> None:
    task_id = whole_id(options.task_id)
    events = [dataclasses.asdict(e) for e in client.history(task_id)]  # the API's fields
    if options.json:
        print(render.to_json({"task_id": task_id, "events": events}))
    else:
        render.console.print(render.history_table(events))


def cmd_cancel(client: LedgerClient, options: argparse.Namespace) -> None:
    task = client.cancel(whole_id(options.task_id), reason=options.reason)
    render.console.print(f"{task.id}  {task.state}")


def cmd_retry(client: LedgerClient, options: argparse.Namespace) -> None:
    task = client.retry(whole_id(options.task_id))
    render.console.print(f"{task.id}  {task.state}")


def cmd_signal(client: LedgerClient, options: argparse.Namespace) -> None:
    task = client.signal(whole_id(options.task_id), options.name, signal_data(options.data))
    render.console.print(f"{task.id}  {task.state}")


def cmd_queues(client: LedgerClient, options: argparse.Namespace) -> None:
    if options.action == "pause":
        client.pause_queue(options.name)
    elif options.action == "resume":
        client.resume_queue(options.name)
    for queue in sorted(client.queues(), key=lambda q: str(q.get("name"))):
        state = "paused" if queue.get("paused") else "running"
        render.console.print(f"{queue['name']:<20} concurrency {queue['concurrency']:>4}  {state}")


COMMANDS: dict[str, Command] = {
    "enqueue": cmd_enqueue,
    "tasks": cmd_tasks,
    "show": cmd_show,
    "history": cmd_history,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "signal": cmd_signal,
    "queues": cmd_queues,
}
