"""The examples of docs/patterns.md run as written: each original pattern, end to end."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from execution_ledger.adapters.postgres.schedule_clock import PostgresScheduleClock
from execution_ledger.adapters.postgres.task_queries import TaskFilter, list_tasks
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.processors.cron import CronScheduler
from tests.adapters.http.live_server import LiveServer
from tests.processors.worker_harness import run_nodes_until

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def maintenance(ledger_env: None) -> Iterator[Runtime]:
    runtime = open_runtime(EXAMPLES / "maintenance.toml", pool_size=2)
    yield runtime
    runtime.close()


@pytest.fixture
def workflows(ledger_env: None) -> Iterator[Runtime]:
    runtime = open_runtime(EXAMPLES / "workflows.toml", pool_size=2)
    yield runtime
    runtime.close()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_ten_maintenance_jobs_are_ten_schedules_over_one_shell_task_type(
    maintenance: Runtime,
) -> None:
    registry = maintenance.settings.config.registry
    assert len(registry.schedules) == 10 and list(registry.task_types) == ["maintenance"]
    clock = Clock(datetime(2026, 3, 2, 11, 59, 30, tzinfo=UTC))
    cron = CronScheduler(
        registry.schedules, PostgresScheduleClock(maintenance.store), maintenance.ledger, clock
    )
    cron.run_once()
    clock.now += timedelta(
        seconds=40
    )  # 12:00:10: every */5, */15, hourly and */2 h schedule is due
    fired = cron.run_once()
    assert {f.schedule for f in fired} == {
        "metrics-rollup",
        "pattern-sync",
        "cache-trim-hot",
        "cache-trim-cold",
        "agent-evolution",
        "index-stats",
    }

    def all_done() -> bool:
        return all(maintenance.store.load(f.task_id).state.value == "succeeded" for f in fired)

    # The node's own scheduler (real clock) also catches up the "latest"/"all" schedules.
    run_nodes_until(maintenance, all_done)
    maintenance.catch_up()
    rows = list_tasks(maintenance.store, TaskFilter(tag="schedule:metrics-rollup")).rows
    assert rows[0]["result"]["stdout"] == "maintenance rollup metrics\n"


def test_a_dependency_graph_with_role_policies_over_http(workflows: Runtime) -> None:
    with (
        LiveServer(workflows, worker=True) as live,
        live.client("ada-token") as ada,
        live.client("root-token") as root,
    ):
        graph = ada.post(
            "/v1/graphs",
            json={
                "tasks": [
                    {"ref": "compile", "type": "compile", "args": {"module": "core"}},
                    {
                        "ref": "test",
                        "type": "test",
                        "args": {"module": "core"},
                        "depends_on": ["compile"],
                    },
                ]
            },
        )
        assert graph.status_code == 201
        refused = ada.post("/v1/tasks", json={"type": "review", "args": {"lines": 120}})
        assert refused.status_code == 403
        review = root.post(
            "/v1/tasks", params={"wait": 10}, json={"type": "review", "args": {"lines": 120}}
        )
        assert review.status_code == 200 and review.json()["result"] == {"verdict": "ok"}
        test_id = graph.json()["tasks"]["test"]
        done = ada.post(f"/v1/tasks/{test_id}/retry")  # not failed: refused as a conflict
        assert done.status_code == 409


def test_a_synchronous_agent_call_waits_for_its_result_one_task_at_a_time(
    workflows: Runtime,
) -> None:
    with LiveServer(workflows, worker=True) as live, live.client("ada-token") as ada:
        calls = [
            ada.post(
                "/v1/tasks",
                params={"wait": 10},
                json={"type": "agent.execute", "args": {"agent_id": "42", "task": f"step {i}"}},
            )
            for i in range(3)
        ]
    assert [c.status_code for c in calls] == [200, 200, 200]
    assert [c.json()["result"]["task"] for c in calls] == ["step 0", "step 1", "step 2"]
    assert {c.json()["lane"] for c in calls} == {"agent:42"}
