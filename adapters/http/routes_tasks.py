"""Task routes: enqueue one task (optionally waiting for its result) or a DAG, read, list,
history, cancel, retry, signal, the connected graph of a task (and its run-time children) and
the ready set of a queue."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any
from uuid import UUID

from aiohttp import web

from execution_ledger.adapters import request_schemas as schemas
from execution_ledger.adapters import task_wait
from execution_ledger.adapters.coalesced_enqueue import coalesced_by
from execution_ledger.adapters.http import bodies, policy
from execution_ledger.adapters.http.auth import requester_of
from execution_ledger.adapters.http.context import ServerContext, context_of
from execution_ledger.adapters.http.views import json_response
from execution_ledger.adapters.ledger_reads import MAX_PAGE, RecordedEvent, TaskFilter
from execution_ledger.adapters.task_filters import check_state
from execution_ledger.adapters.telemetry.context import enqueue_trace
from execution_ledger.adapters.views import (
    history_json,
    progress_json,
    task_detail_json,
    task_json,
    task_page_json,
    workflow_json,
)
from execution_ledger.domain.errors import InvalidQuery, UnknownQueue
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import Task, TaskState


def task_location(task_id: UUID) -> dict[str, str]:
    return {"Location": f"/v1/tasks/{task_id}"}


async def enqueue_task(request: web.Request) -> web.Response:
    """201 with the task (200 with the task that already holds its idempotency or singleton
    key, or that a debounce coalesced it into: ``coalesced`` says which); with
    ``?wait=SECONDS``, 200 once it ended or 202 if still going."""
    ctx = context_of(request)
    wait = bodies.query_seconds(request, "wait", schemas.MAX_WAIT_SECONDS)
    body = bodies.validated(await bodies.read_json(request), schemas.TASK_SUBMISSION, "the task")
    task_request = bodies.task_request(body)
    policy.check_adhoc_without_principals(
        ctx.registry, ctx.limits.allow_adhoc_without_principals, task_request
    )
    # A waiting call takes its slot before enqueueing: a 429 must leave nothing behind.
    with ctx.waiting.hold() if wait is not None else nullcontext():
        with enqueue_trace(request.headers, "http", "enqueue_task") as trace:
            task, created, recorded = await ctx.write(
                ctx.runtime.ledger.enqueue_recorded_async(
                    trace.carry(task_request), requester_of(request), ctx.executor
                )
            )
            trace.enqueued([task], created)
        if wait is None:
            # A new task is shown from the events just stored; a key's holder from the log.
            if created:
                view = task_json(task, recorded)
            else:
                holder = await ctx.run(ctx.reads.task_and_history, task.id)
                view = coalesced_json(task_request, *holder)
            return json_response(
                view, status=201 if created else 200, headers=task_location(task.id)
            )
        view = await wait_for_end(ctx, task.id, min(wait, ctx.limits.max_wait_seconds))
        if not created:  # waited on the task its singleton or debounce key coalesced it into
            view["coalesced"] = coalesced_by(task_request, task)
    status = 200 if TaskState(view["state"]).is_terminal else 202
    return json_response(view, status=status, headers=task_location(task.id))


def coalesced_json(
    task_request: TaskRequest, task: Task, events: list[RecordedEvent]
) -> dict[str, Any]:
    """The task an enqueue was answered with, and why: ``coalesced`` names the key
    (``idempotency_key``, ``singleton`` or ``debounce``)."""
    return {**task_json(task, events), "coalesced": coalesced_by(task_request, task)}


async def wait_for_end(ctx: ServerContext, task_id: UUID, seconds: float) -> dict[str, Any]:
    """The task's view once it is terminal, or when ``seconds`` have passed."""
    task, events = await task_wait.wait_for_end(
        ctx.reads, ctx.watcher, ctx.run, task_id, seconds, ctx.closing
    )
    return task_json(task, events)


async def enqueue_graph(request: web.Request) -> web.Response:
    ctx = context_of(request)
    body = bodies.validated(await bodies.read_json(request), schemas.GRAPH_SUBMISSION, "the graph")
    requests = bodies.graph_task_requests(body)
    with enqueue_trace(request.headers, "http", "enqueue_graph") as trace:
        tasks = await ctx.run(
            ctx.runtime.ledger.enqueue_graph, trace.carry_all(requests), requester_of(request)
        )
        trace.enqueued(tasks)
    return json_response(
        {"graph_id": tasks[0].graph_id, "tasks": {task.ref: task.id for task in tasks}},
        status=201,
    )


async def get_task(request: web.Request) -> web.Response:
    ctx = context_of(request)
    task, events = await ctx.run(ctx.reads.task_and_history, bodies.path_task_id(request))
    held_by = await ctx.run(ctx.reads.held_by, task)
    return json_response(task_detail_json(task, events, held_by))


async def list_tasks(request: web.Request) -> web.Response:
    """Newest first, from the task view (which trails the log by a moment)."""
    ctx = context_of(request)
    state = bodies.query_text(request, "state")
    check_state(state)
    where = TaskFilter(
        state=state,
        type_name=bodies.query_text(request, "type"),
        queue=bodies.query_text(request, "queue"),
        lane=bodies.query_text(request, "lane"),
        tag=bodies.query_text(request, "tag"),
        since=bodies.query_time(request, "since"),
        until=bodies.query_time(request, "until"),
        text=bodies.query_text(request, "text") or None,
    )
    page = await ctx.run(
        ctx.reads.tasks,
        where,
        limit=bodies.query_int(request, "limit", 50, 1, MAX_PAGE),
        cursor=bodies.query_text(request, "cursor") or None,
    )
    return json_response(task_page_json(page.rows, page.next_cursor))


async def task_history(request: web.Request) -> web.Response:
    ctx = context_of(request)
    task_id = bodies.path_task_id(request)
    _, events = await ctx.run(ctx.reads.task_and_history, task_id)
    return json_response(history_json(task_id, events))


async def cancel_task(request: web.Request) -> web.Response:
    ctx = context_of(request)
    task_id = bodies.path_task_id(request)
    body = await bodies.read_json(request, if_empty={})
    reason = bodies.validated(body, schemas.CANCEL_REQUEST, "the body").get("reason", "")
    requester = requester_of(request)
    task, _ = await ctx.run(ctx.reads.task_and_history, task_id)
    policy.check_cancel(ctx.registry, requester, task)
    await ctx.run(ctx.runtime.ledger.cancel, task_id, requester.principal, reason)
    return json_response(task_json(*await ctx.run(ctx.reads.task_and_history, task_id)))


async def signal_task(request: web.Request) -> web.Response:
    """Deliver a named signal (an approval, an input) to a task waiting for it."""
    ctx = context_of(request)
    task_id = bodies.path_task_id(request)
    body = bodies.validated(await bodies.read_json(request), schemas.SIGNAL_REQUEST, "the body")
    requester = requester_of(request)
    await ctx.run(ctx.reads.task_and_history, task_id)  # 404 for an unknown task
    await ctx.run(
        ctx.runtime.ledger.signal, task_id, body["name"], body.get("data"), requester
    )
    task, events = await ctx.run(ctx.reads.task_and_history, task_id)
    view = task_json(task, events)
    view.update(progress=progress_json(task), workflow=workflow_json(task))
    return json_response(view)


async def retry_task(request: web.Request) -> web.Response:
    ctx = context_of(request)
    task_id = bodies.path_task_id(request)
    requester = requester_of(request)
    task, _ = await ctx.run(ctx.reads.task_and_history, task_id)
    policy.check_retry(ctx.registry, requester, task)
    await ctx.run(ctx.runtime.ledger.retry, task_id, requester.principal)
    return json_response(task_json(*await ctx.run(ctx.reads.task_and_history, task_id)))


async def task_graph(request: web.Request) -> web.Response:
    """The connected DAG of ``?task=ID`` from the readiness graph."""
    ctx = context_of(request)
    task_id = bodies.query_uuid(request, "task")
    if task_id is None:
        raise InvalidQuery("name a task: /v1/graph?task=ID")
    task, _ = await ctx.run(ctx.reads.task_and_history, task_id)  # 404 for an unknown task
    graph = await ctx.run(ctx.reads.task_graph, task_id)
    nodes = [
        {
            "id": n["task_id"],
            "type": n["type_name"],
            "ref": n["ref"],
            "state": n["state"],
            "queue": n["queue"],
            "lane": n["lane"],
            "priority": n["priority"],
            "depth": n["depth"],
            "pending": n["pending"],
            "graph_id": n["graph_id"],
        }
        for n in graph.nodes
    ]
    edges = [{"from": e["parent"], "to": e["child"]} for e in graph.edges]
    return json_response(
        {
            "task_id": task_id,
            "nodes": nodes,
            "edges": edges,
            "truncated": graph.truncated,
            # The run-time tree (children spawned by an attempt), from the log.
            "parent_id": task.parent_id,
            "children": list(task.children),
        }
    )


async def ready_set(request: web.Request) -> web.Response:
    """The tasks of a queue that may start now, in dispatch order."""
    ctx = context_of(request)
    queue = bodies.query_text(request, "queue")
    if queue is None:
        raise InvalidQuery("name a queue: /v1/ready?queue=NAME")
    if queue not in ctx.registry.queues:
        raise UnknownQueue(f"unknown queue {queue!r}")
    limit = bodies.query_int(request, "limit", 100, 1, MAX_PAGE)
    rows = await ctx.run(ctx.reads.ready_tasks, queue, limit)
    return json_response(
        {
            "queue": queue,
            "tasks": [
                {
                    "id": r["task_id"],
                    "queue": r["queue"],
                    "priority": r["priority"],
                    "lane": r["lane"],
                    "state": r["state"],
                    "depth": r["depth"],
                    "run_at": r["run_at"],
                }
                for r in rows
            ],
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/tasks", enqueue_task, name="tasks.enqueue"),
        web.get("/v1/tasks", list_tasks, name="tasks.list"),
        web.post("/v1/graphs", enqueue_graph, name="graphs.enqueue"),
        web.get("/v1/tasks/{task_id}", get_task, name="tasks.get"),
        web.get("/v1/tasks/{task_id}/history", task_history, name="tasks.history"),
        web.post("/v1/tasks/{task_id}/cancel", cancel_task, name="tasks.cancel"),
        web.post("/v1/tasks/{task_id}/retry", retry_task, name="tasks.retry"),
        web.post("/v1/tasks/{task_id}/signal", signal_task, name="tasks.signal"),
        web.get("/v1/graph", task_graph, name="graph.get"),
        web.get("/v1/ready", ready_set, name="ready.list"),
    ]
