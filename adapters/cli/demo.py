"""``ledger demo``: start the service (HTTP API, processors, a worker) on loopback, submit a
DAG over HTTP that uses several adapters, watch it run, then show it.

It shows, on the embedded database by default: a shell, a Lua and a Python task feeding a
third; a task that fails, is retried and fails for good, with its dependent skipped; three
steps of one agent running one at a time in their lane. Then the results, the readiness
graph and one task's history, each read from the API as any client would. It prints the web
console's address and, run at a terminal, keeps serving it until Enter is pressed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx
from rich.live import Live
from rich.table import Table

from execution_ledger.adapters.cli import render
from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.off_loop import run_off_loop
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.adapters.service import serve_api

DEMO_TIMEOUT_SECONDS = 60
TERMINAL = {"succeeded", "failed", "cancelled", "skipped"}


def demo_graph() -> dict[str, Any]:
    steps = [
        {"ref": f"agent-step-{n}", "type": "agent.step", "args": {"agent_id": "demo", "step": n}}
        for n in (1, 2, 3)
    ]
    return {
        "tasks": [
            {"ref": "greet", "type": "hello", "args": {"name": "ledger"}},
            {"ref": "square", "type": "square", "args": {"n": 12}},
            {
                "ref": "sum",
                "type": "add",
                "args": {"a": 12, "b": 144},
                "depends_on": ["greet", "square"],
            },
            {"ref": "flaky", "type": "fail", "args": {"message": "a demo failure"}},
            {
                "ref": "after-flaky",
                "type": "echo",
                "args": {"note": "never runs"},
                "depends_on": ["flaky"],
            },
            *steps,
        ]
    }


def run_demo(runtime: Runtime) -> None:
    asyncio.run(_demo(runtime))


async def _demo(runtime: Runtime) -> None:
    stop = asyncio.Event()
    bound: list[tuple[str, int]] = []
    server = asyncio.create_task(
        serve_api(runtime, "127.0.0.1", 0, stop, bound.extend)
    )
    node = asyncio.create_task(
        WorkerNode(runtime, concurrency=10, projection_process=True).run(stop)
    )
    try:
        while not bound:
            if server.done():
                server.result()  # surfaces why the server did not start
            await asyncio.sleep(0.02)
        base = f"http://127.0.0.1:{bound[0][1]}"
        render.console.print(f"service up at {base}/v1 (OpenAPI at {base}/openapi.json)")
        render.console.print(f"web console at {base}/ (open it in a browser while the demo runs)")
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            await _show(client)
        if sys.stdin.isatty():  # a person at a terminal: keep serving the console
            render.console.print(f"\nweb console: {base}/#/tasks (press Enter to stop)")
            await run_off_loop(None, sys.stdin.readline)
    finally:
        stop.set()
        await asyncio.gather(server, node, return_exceptions=True)


async def _show(client: httpx.AsyncClient) -> None:
    submitted = (await client.post("/v1/graphs", json=demo_graph())).raise_for_status().json()
    ids: dict[str, str] = submitted["tasks"]
    render.console.print(
        f"POST /v1/graphs: {len(ids)} tasks stored atomically (graph {submitted['graph_id']})\n"
    )
    tasks = await _watch(client, ids)
    if not render.console.is_terminal:  # off a terminal, rich's live display ends its
        render.console.line()  # last frame without a newline: the next title joined it
    render.console.print(_results_table(tasks))
    graph = (await client.get("/v1/graph", params={"task": ids["sum"]})).json()
    flaky = (await client.get("/v1/graph", params={"task": ids["flaky"]})).json()
    render.console.print(_graph_table(ids, [*graph["edges"], *flaky["edges"]], tasks))
    history = (await client.get(f"/v1/tasks/{ids['sum']}/history")).json()["events"]
    render.console.print(f"\nGET /v1/tasks/{ids['sum']}/history (task 'sum'):")
    render.console.print(_history_table(history))


async def _watch(client: httpx.AsyncClient, ids: dict[str, str]) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + DEMO_TIMEOUT_SECONDS
    with Live(console=render.console, refresh_per_second=8) as live:
        while True:
            replies = await asyncio.gather(*(client.get(f"/v1/tasks/{i}") for i in ids.values()))
            tasks = {ref: reply.json() for ref, reply in zip(ids, replies, strict=True)}
            live.update(_progress_table(tasks))
            if all(t["state"] in TERMINAL for t in tasks.values()) or time.monotonic() > deadline:
                return tasks
            await asyncio.sleep(0.15)


def _progress_table(tasks: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="running the demo graph", header_style="bold")
    for column in ("ref", "type", "adapter", "state", "attempts"):
        table.add_column(column)
    for ref, task in tasks.items():
        table.add_row(
            ref,
            task["type"],
            task["adapter"],
            render.styled_state(task["state"]),
            f"{task['attempts']}/{task['max_attempts']}",
        )
    return table


def _results_table(tasks: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="results", header_style="bold")
    for column in ("ref", "state", "result or error"):
        table.add_column(column)
    for ref, task in tasks.items():
        outcome = task["result"] if task["error"] is None else task["error"]
        table.add_row(
            ref, render.styled_state(task["state"]), json.dumps(outcome, sort_keys=True)[:100]
        )
    return table


def _graph_table(ids: dict[str, str], edges: list[dict[str, str]], tasks: dict[str, Any]) -> Table:
    refs = {task_id: ref for ref, task_id in ids.items()}
    table = Table(
        title="readiness graph (GET /v1/graph): dependency -> dependent", header_style="bold"
    )
    for column in ("dependency", "dependent", "dependent state"):
        table.add_column(column)
    for edge in sorted({(e["from"], e["to"]) for e in edges}):
        child = refs.get(edge[1], edge[1])
        table.add_row(refs.get(edge[0], edge[0]), child, render.styled_state(tasks[child]["state"]))
    return table


def _history_table(events: list[dict[str, Any]]) -> Table:
    table = Table(header_style="bold")
    for column in ("position", "event", "time", "principal", "data"):
        table.add_column(column)
    for event in events:
        data = json.dumps(event["data"], sort_keys=True)
        table.add_row(
            str(event["position"]),
            event["type"],
            event["time"][11:23],
            event["principal"],
            data if len(data) <= 70 else data[:67] + "...",
        )
    return table
