"""``ledger demo``: start a worker node, submit a DAG over several adapters, watch it run.

It shows, on the embedded database by default: a shell, a Lua and a Python task feeding a
third; a task that fails, is retried and fails for good, with its dependent skipped; three
steps of one agent running one at a time in their lane. Then the results, the readiness
graph and one task's history.
"""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

from psycopg import sql
from rich.live import Live
from rich.table import Table

from adapters.cli import render
from adapters.node import WorkerNode
from adapters.runtime import Runtime
from domain.submission import TaskRequest
from domain.task import Task

DEMO_TIMEOUT_SECONDS = 60


def demo_graph() -> list[TaskRequest]:
    return [
        TaskRequest("hello", {"name": "ledger"}, ref="greet"),
        TaskRequest("square", {"n": 12}, ref="square"),
        TaskRequest("add", {"a": 12, "b": 144}, ref="sum", depends_on=("greet", "square")),
        TaskRequest("fail", {"message": "a demo failure"}, ref="flaky"),
        TaskRequest("echo", {"note": "never runs"}, ref="after-flaky", depends_on=("flaky",)),
        *[
            TaskRequest("agent.step", {"agent_id": "demo", "step": step}, ref=f"agent-step-{step}")
            for step in (1, 2, 3)
        ],
    ]


def run_demo(runtime: Runtime) -> None:
    tasks = runtime.ledger.enqueue_graph(demo_graph())
    render.console.print(f"submitted a graph of {len(tasks)} tasks (graph {tasks[0].graph_id})\n")
    asyncio.run(_run_until_done(runtime, [t.id for t in tasks]))
    final = [runtime.store.load(t.id) for t in tasks]
    render.console.print(_results_table(final))
    render.console.print(_graph_table(runtime, final))
    summed = next(t for t in final if t.ref == "sum")
    render.console.print(f"\nhistory of task 'sum' ({summed.id}):")
    render.console.print(render.history_table(runtime.ledger.history(summed.id)))


async def _run_until_done(runtime: Runtime, ids: list[UUID]) -> None:
    stop = asyncio.Event()
    node = WorkerNode(runtime, concurrency=10)
    running = asyncio.create_task(node.run(stop))
    deadline = time.monotonic() + DEMO_TIMEOUT_SECONDS
    try:
        with Live(console=render.console, refresh_per_second=8) as live:
            while True:
                tasks = await asyncio.to_thread(lambda: [runtime.store.load(i) for i in ids])
                live.update(_progress_table(tasks))
                if all(t.state.is_terminal for t in tasks) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.15)
    finally:
        stop.set()
        await asyncio.gather(running, return_exceptions=True)


def _progress_table(tasks: list[Task]) -> Table:
    table = Table(title="running the demo graph", header_style="bold")
    for column in ("ref", "type", "adapter", "state", "attempts"):
        table.add_column(column)
    for task in tasks:
        table.add_row(
            task.ref or "",
            task.type_name,
            task.adapter,
            render.styled_state(task.state.value),
            f"{task.attempts}/{task.max_attempts}",
        )
    return table


def _results_table(tasks: list[Task]) -> Table:
    table = Table(title="results", header_style="bold")
    for column in ("ref", "state", "result or error"):
        table.add_column(column)
    for task in tasks:
        outcome = task.result if task.error is None else task.error
        text = render.compact_json(outcome)
        table.add_row(task.ref or "", render.styled_state(task.state.value), text[:100])
    return table


def _graph_table(runtime: Runtime, tasks: list[Task]) -> Table:
    refs = {t.id: t.ref or str(t.id) for t in tasks}
    schema = runtime.settings.schema
    with runtime.store.transaction() as cur:
        edges = cur.execute(
            sql.SQL(
                "SELECT parent, child FROM {} WHERE child = ANY(%s) ORDER BY parent, child"
            ).format(sql.Identifier(schema, "readiness_edges")),
            (list(refs),),
        ).fetchall()
        nodes = {
            row["task_id"]: row
            for row in cur.execute(
                sql.SQL(
                    "SELECT task_id, depth, pending, state FROM {} WHERE task_id = ANY(%s)"
                ).format(sql.Identifier(schema, "readiness_nodes")),
                (list(refs),),
            ).fetchall()
        }
    table = Table(title="readiness graph (edges: dependency -> dependent)", header_style="bold")
    for column in ("dependency", "dependent", "dependent depth", "dependent state"):
        table.add_column(column)
    for edge in edges:
        child = nodes[edge["child"]]
        table.add_row(
            refs[edge["parent"]],
            refs[edge["child"]],
            str(child["depth"]),
            render.styled_state(child["state"]),
        )
    return table
