"""The workflow patterns of docs/patterns.md (examples/workflows.toml) run as written, over
HTTP on a real PostgreSQL with a worker node: results flowing coder -> tester -> critic, a
release waiting for the critic's approval, a fan-out waiting for its children, and a
conversing agent whose state is carried from step to step in the log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from execution_ledger.adapters.runtime import Runtime, open_runtime
from tests.adapters.http.live_server import LiveServer
from tests.processors.worker_harness import wait_until

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def workflows(ledger_env: None) -> Iterator[Runtime]:
    runtime = open_runtime(EXAMPLES / "workflows.toml", pool_size=2)
    yield runtime
    runtime.close()


def task_of(client: httpx.Client, task_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200
    return response.json()


def state_is(client: httpx.Client, task_id: str, state: str) -> bool:
    return task_of(client, task_id)["state"] == state


def test_the_coder_tester_critic_graph_passes_results_along_and_waits_for_approval(
    workflows: Runtime,
) -> None:
    with (
        LiveServer(workflows, worker=True) as live,
        live.client("ada-token") as ada,
        live.client("cris-token") as cris,
    ):
        graph = ada.post(
            "/v1/graphs",
            json={
                "tasks": [
                    {"ref": "write", "type": "code.write", "args": {"module": "core"}},
                    {"ref": "test", "type": "code.test", "depends_on": ["write"]},
                    {"ref": "review", "type": "code.review", "depends_on": ["write", "test"]},
                    {"ref": "release", "type": "code.release", "depends_on": ["review"]},
                ]
            },
        )
        assert graph.status_code == 201
        ids = graph.json()["tasks"]
        wait_until(lambda: state_is(ada, ids["release"], "waiting"), what="release waits")

        tested = task_of(ada, ids["test"])["result"]
        assert tested["stdout"] == "tested core 2\n"
        review = task_of(ada, ids["review"])
        assert review["result"] == {"verdict": "ok", "lines": 2}
        release = task_of(ada, ids["release"])
        assert release["workflow"]["awaiting_signals"] == ["approval"]

        # The coder may not approve (its role delivers no signal); the critic may.
        refused = ada.post(f"/v1/tasks/{ids['release']}/signal", json={"name": "approval"})
        assert refused.status_code == 403
        assert state_is(ada, ids["release"], "waiting")
        approved = cris.post(
            f"/v1/tasks/{ids['release']}/signal",
            json={"name": "approval", "data": {"by": "cris", "note": "ship it"}},
        )
        assert approved.status_code == 200
        wait_until(lambda: state_is(ada, ids["release"], "succeeded"), what="release runs")
        history = ada.get(f"/v1/tasks/{ids['release']}/history").json()["events"]
        names = [event["type"] for event in history]
        assert "TaskSignalled" in names
        assert names.index("TaskSignalled") < names.index("TaskStarted")


def test_a_fan_out_waits_for_its_children_and_takes_their_results(workflows: Runtime) -> None:
    with LiveServer(workflows, worker=True) as live, live.client("ada-token") as ada:
        parent = ada.post("/v1/tasks", json={"type": "fan.out", "args": {"numbers": [2, 3, 4]}})
        assert parent.status_code == 201
        parent_id = parent.json()["id"]
        wait_until(lambda: state_is(ada, parent_id, "succeeded"), what="the fan-in")

        done = task_of(ada, parent_id)
        assert done["result"]["result"] == {"spawned": 3}
        assert done["result"]["children"] == [{"square": 4}, {"square": 9}, {"square": 16}]
        children = done["workflow"]["children"]
        assert len(children) == 3
        for child_id in children:
            child = task_of(ada, child_id)
            assert child["workflow"]["parent_id"] == parent_id
            assert child["principal"] == "ada"  # submitted as the parent's requester
        graph = ada.get("/v1/graph", params={"task": parent_id}).json()
        assert graph["children"] == children


def test_an_agent_converses_one_step_at_a_time_with_its_state_in_the_log(
    workflows: Runtime,
) -> None:
    with LiveServer(workflows, worker=True) as live, live.client("ada-token") as ada:
        previous: str | None = None
        replies = []
        for message in ("hello", "how are you", "bye"):
            body: dict[str, Any] = {
                "type": "agent.step",
                "args": {"agent_id": "7", "message": message},
            }
            if previous is not None:
                body.update(depends_on=[previous], inputs={"previous": previous})
            step = ada.post("/v1/tasks", params={"wait": 20}, json=body)
            assert step.status_code == 200, step.text
            previous = step.json()["id"]
            replies.append(step.json()["result"])

    assert [r["turns"] for r in replies] == [
        ["hello"],
        ["hello", "how are you"],
        ["hello", "how are you", "bye"],
    ]
    assert replies[-1]["reply"] == "turn 3: heard 'bye' after 2 before"
