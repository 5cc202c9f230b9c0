"""What the ``ledger`` commands do, once ``adapters/cli/main.py`` has parsed the line.

Imported only when a command runs (not for ``--help`` or ``--version``): it pulls in the
runtime, PostgreSQL and rich. Each ``cmd_*`` takes the opened runtime and the parsed
options; errors the user can cause are ``LedgerError``s (one line, exit status 2).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from execution_ledger.adapters.cli import render
from execution_ledger.adapters.cli.arguments import load_graph_file, parse_args_option, parse_run_at
from execution_ledger.adapters.cli.filter_options import task_filter_of
from execution_ledger.adapters.cli.task_ids import resolve_task_id
from execution_ledger.adapters.coalesced_enqueue import coalesced_by
from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.adapters.telemetry.context import EnqueueTrace, cli_enqueue_trace
from execution_ledger.adapters.views import history_json, task_detail_json, task_page_json
from execution_ledger.domain.coalescing import debounce_from_text
from execution_ledger.domain.durations import parse_duration
from execution_ledger.domain.errors import ConfigError, InvalidQuery, InvalidSubmission
from execution_ledger.domain.submission import TaskRequest

if TYPE_CHECKING:
    from execution_ledger.adapters.node import WorkerNode


def _optional_duration(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ConfigError as error:
        raise InvalidSubmission(f"{option}: {error.reason}") from None


_COALESCED_NOTES = {
    "idempotency_key": "existing task: idempotency key already held",
    "singleton": "existing task: singleton key held",
    "debounce": "debounced into this pending task",
}


def cmd_enqueue(rt: Runtime, options: argparse.Namespace) -> None:
    # A ledger.enqueue span when traces are configured; TRACEPARENT from the environment.
    with cli_enqueue_trace(rt.settings.config, "ledger enqueue") as trace:
        _enqueue(rt, options, trace)


def _enqueue(rt: Runtime, options: argparse.Namespace, trace: EnqueueTrace) -> None:
    if options.graph:
        if options.type:
            raise InvalidSubmission("give a task type or --graph, not both")
        tasks = rt.ledger.enqueue_graph(trace.carry_all(load_graph_file(options.graph)))
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
        singleton=options.singleton,
        debounce=(
            None
            if options.debounce is None
            else debounce_from_text(
                options.debounce, options.debounce_mode, options.debounce_max_wait
            )
        ),
    )
    task, created = rt.ledger.enqueue_once(trace.carry(request))
    note = "" if created else f"  ({_COALESCED_NOTES[coalesced_by(request, task)]})"
    render.console.print(f"{task.id}  {task.type_name}  {task.state.value}{note}")


def cmd_tasks(rt: Runtime, options: argparse.Namespace) -> None:
    where = task_filter_of(rt.registry, options)  # refuses what cannot match
    rt.catch_up()
    page = rt.reads.tasks(where, limit=options.limit, cursor=options.cursor)
    types = rt.registry.task_types
    if options.type_name is not None and options.type_name not in types and not page.rows:
        # An ad-hoc type is not in the registry: refused only when no task has it.
        raise InvalidQuery(
            f"unknown task type {options.type_name!r} (valid: {', '.join(sorted(types))})"
        )
    shown = task_page_json(page.rows, page.next_cursor)  # as GET /v1/tasks answers
    if options.json:
        print(render.to_json(shown))
        return
    if options.wide or not render.console.is_terminal:
        for line in render.task_lines(shown["tasks"]):
            print(line)
    else:
        render.console.print(render.task_table(shown["tasks"]))
    if page.next_cursor:
        render.console.print(f"more: ledger tasks --cursor {page.next_cursor}")


def cmd_show(rt: Runtime, options: argparse.Namespace) -> None:
    task, events = rt.reads.task_and_history(resolve_task_id(rt.reads, options.task_id))
    shown = task_detail_json(task, events, rt.reads.held_by(task))  # as GET /v1/tasks/{id}
    if options.json:
        print(render.to_json(shown))
    else:
        render.console.print(render.task_details(shown))


def cmd_history(rt: Runtime, options: argparse.Namespace) -> None:
    task_id = resolve_task_id(rt.reads, options.task_id)
    shown = history_json(task_id, rt.ledger.history(task_id))  # as GET /v1/tasks/{id}/history
    if options.json:
        print(render.to_json(shown))
    else:
        render.console.print(render.history_table(shown["events"]))


def cmd_demo(rt: Runtime, options: argparse.Namespace) -> None:
    from execution_ledger.adapters.cli.demo import run_demo

    run_demo(rt)


def cmd_cancel(rt: Runtime, options: argparse.Namespace) -> None:
    task = rt.ledger.cancel(resolve_task_id(rt.reads, options.task_id), reason=options.reason)
    render.console.print(f"{task.id}  {task.state.value}")


def cmd_retry(rt: Runtime, options: argparse.Namespace) -> None:
    task = rt.ledger.retry(resolve_task_id(rt.reads, options.task_id))
    render.console.print(f"{task.id}  {task.state.value}")


def cmd_queues(rt: Runtime, options: argparse.Namespace) -> None:
    if options.action == "pause":
        rt.ledger.pause_queue(options.name)
    elif options.action == "resume":
        rt.ledger.resume_queue(options.name)
    for name, queue in sorted(rt.registry.queues.items()):
        paused = rt.reads.queue_paused(name)
        render.console.print(
            f"{name:<20} concurrency {queue.concurrency:>4}  {'paused' if paused else 'running'}"
        )


def worker_node(rt: Runtime, options: argparse.Namespace) -> WorkerNode:
    """The node of ``ledger worker`` / ``ledger serve``, its options checked."""
    from execution_ledger.adapters.node import WorkerNode

    if options.concurrency < 1:
        raise InvalidSubmission("--concurrency must be at least 1")
    queues = [q for q in (options.queues or "").split(",") if q] or None
    unknown = sorted(set(queues or ()) - set(rt.registry.queues))
    if unknown:
        known = ", ".join(sorted(rt.registry.queues))
        raise InvalidSubmission(f"unknown queue {unknown[0]!r} (known: {known})")
    run_projections = not getattr(options, "no_projections", False)
    return WorkerNode(
        rt,
        queues=queues,
        concurrency=options.concurrency,
        projections=run_projections,
        projection_process=not options.projection_threads,
    )
