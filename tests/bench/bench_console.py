"""Benchmark: the web console's pages with a 100,000-task log.

Builds the log without a worker (graphs of 5,000 independent tasks; in each, six in ten
succeed, one fails, three stay ready; one save per graph), brings the projections up to
the head, then serves the API and measures:

- each page's API calls (the calls the page makes, one after the other: an upper bound of
  the page's wait, since the browser sends them in parallel), median of 5 runs;
- the plans of the task list's queries (first page, a state filter, the next page, a text
  search), to show they walk the ``(enqueued_at, task_id)`` index;
- with headless Chromium if present, the time from opening a page to its content shown.

    python -m tests.bench.bench_console                 # 100,000 tasks
    python -m tests.bench.bench_console --tasks 20000
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from psycopg import sql

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from tests.adapters.http.live_server import LiveServer
from tests.bench.common import fresh_runtime

GRAPH = 5000


def build_log(runtime: Runtime, count: int) -> None:
    for start in range(0, count, GRAPH):
        requests = [
            TaskRequest("echo", {"i": start + n, "city": f"city-{(start + n) % 997}"})
            for n in range(min(GRAPH, count - start))
        ]
        tasks = runtime.ledger.enqueue_graph(requests)
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=60)
        for n, task in enumerate(tasks):
            if n % 10 >= 7:
                continue  # stays ready
            attempt = task.start(f"bench-node-{n % 4}", lease, now)
            if n % 10 == 6:
                task.fail(attempt, "RuntimeError", f"boom {n}", details={"stderr": "x"})
            else:
                task.succeed(attempt, {"ok": True, "n": n})
        runtime.store.save(*tasks)


def page_calls(task_id: str, head: int) -> dict[str, list[str]]:
    return {
        "overview": [
            "/v1/queues",
            "/v1/activity?minutes=60",
            "/v1/workers",
            "/healthz",
            "/v1/audit/last-verification",
        ],
        "tasks (first page)": ["/v1/queues", "/v1/tasks?limit=50"],
        "tasks, state=failed": ["/v1/tasks?state=failed&limit=50"],
        "tasks, text search (rare)": ["/v1/tasks?text=city-996&limit=50"],
        "tasks, text search (absent)": ["/v1/tasks?text=nowhere&limit=50"],
        "task": [f"/v1/tasks/{task_id}", f"/v1/tasks/{task_id}/history", f"/v1/graph?task={task_id}"],
        "task types (echo)": ["/v1/task-types", "/v1/task-types/echo"],
        "audit (last 1,000 positions)": [f"/v1/audit/log?after={max(0, head - 1000)}&limit=200"],
        "session (every page)": ["/v1/access", "/v1/task-types"],
    }


def timed(client: httpx.Client, paths: list[str]) -> float:
    started = time.perf_counter()
    for path in paths:
        client.get(path).raise_for_status()
    return (time.perf_counter() - started) * 1000


def plans(runtime: Runtime) -> dict[str, str]:
    table = sql.Identifier(runtime.settings.schema, "task_view")
    queries = {
        "first page": sql.SQL("SELECT * FROM {} ORDER BY enqueued_at DESC, task_id DESC LIMIT 51"),
        "state=failed": sql.SQL(
            "SELECT * FROM {} WHERE state = 'failed' ORDER BY enqueued_at DESC, task_id DESC LIMIT 51"
        ),
        "activity": sql.SQL("SELECT count(*) FROM {} WHERE finished_at >= now() - interval '1 hour'"),
    }
    found = {}
    with runtime.store.transaction() as cur:
        for name, query in queries.items():
            rows = cur.execute(sql.SQL("EXPLAIN (ANALYZE, COSTS OFF) ") + query.format(table))
            found[name] = " | ".join(r["QUERY PLAN"].strip() for r in rows.fetchall()[:3])
    return found


def browser_times(url: str, task_id: str) -> dict[str, float]:
    from tests.adapters.http.console.browser import Page, missing, start_chromium

    if missing():
        return {}
    driver = start_chromium()
    try:
        page = Page(driver, url)
        results = {}
        for name, route, selector in (
            ("overview", "", "#last-verification"),
            ("tasks", "tasks", "#task-rows tr[data-task]"),
            ("task", f"task/{task_id}", "table.grid tr[data-event]"),
        ):
            page.open("types")  # warm the modules and the session
            page.css("#type-detail")
            started = time.perf_counter()
            page.open(route)
            page.css(selector)
            results[name] = (time.perf_counter() - started) * 1000
        return results
    finally:
        driver.quit()


def measure(count: int) -> None:
    with fresh_runtime() as runtime:
        started = time.perf_counter()
        build_log(runtime, count)
        runtime.catch_up()
        print(f"built {count} tasks, head {runtime.store.head_position()}, "
              f"in {time.perf_counter() - started:.0f} s")
        with LiveServer(runtime) as live, httpx.Client(base_url=live.url, timeout=60) as client:
            head = client.get("/healthz").json()["head"]
            task_id = client.get("/v1/tasks?state=failed&limit=1").json()["tasks"][0]["id"]
            for name, paths in page_calls(task_id, head).items():
                runs = [timed(client, paths) for _ in range(5)]
                print(f"{name:32} {statistics.median(runs):7.1f} ms  ({len(paths)} calls)")
            for name, plan in plans(runtime).items():
                print(f"plan {name}: {plan}")
            for name, ms in browser_times(live.url, task_id).items():
                print(f"browser {name:24} {ms:7.0f} ms to content shown")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    args: Any = parser.parse_args()
    measure(args.tasks)


if __name__ == "__main__":
    main()
