"""Workflows over HTTP on a real PostgreSQL with a worker node: signalling a task (and every
refusal of it), the progress and workflow parts of ``GET /v1/tasks/{id}``, the signal_wait
timeout enforced by the watchdog, the run-time tree in the graph endpoint and the workflow
steps of the dataset."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from execution_ledger.adapters.runtime import Runtime
from tests.adapters.http.live_server import LiveServer, runtime_with_file
from tests.processors.worker_harness import wait_until

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
EXTRA = """
[task_types.quick_gate]
adapter = "python"
queue = "build"
signals = ["approval"]
timeouts = { signal_wait = "1s" }
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }

[task_types.progress]
adapter = "python"
queue = "build"
settings = { callable = "execution_ledger.adapters.executors.workflow_demo:report_progress" }
"""


@pytest.fixture
def rt(ledger_env: None, tmp_path: Path) -> Iterator[Runtime]:
    text = (EXAMPLES / "workflows.toml").read_text() + EXTRA
    with runtime_with_file(tmp_path, text) as runtime:
        yield runtime


@pytest.fixture
def live(rt: Runtime) -> Iterator[LiveServer]:
    with LiveServer(rt, worker=True) as server:
        yield server


def task_of(client: httpx.Client, task_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200
    return response.json()


def history_of(client: httpx.Client, task_id: str) -> list[str]:
    return [e["type"] for e in client.get(f"/v1/tasks/{task_id}/history").json()["events"]]


def test_every_refused_signal_is_a_clear_error_and_records_nothing(live: LiveServer) -> None:
    with (
        live.client("root-token") as root,
        live.client("ada-token") as ada,
        live.client("cris-token") as cris,
    ):
        release = ada.post("/v1/tasks", json={"type": "code.release", "args": {"v": 1}}).json()
        path = f"/v1/tasks/{release['id']}/signal"
        cases = [
            (ada, {"name": "approval"}, 403, "forbidden"),  # the coder's role signals nothing
            (cris, {"name": "deploy"}, 403, "forbidden"),  # the critic's only "approval"
            (root, {"name": "deploy"}, 409, "invalid_transition"),  # not awaited
            (root, {"name": "approval", "extra": 1}, 422, None),  # an unknown field
            (root, {"data": 1}, 422, None),  # no name
            (root, {"name": "bad name!"}, 422, None),
        ]
        for client, body, status, code in cases:
            answer = client.post(path, json=body)
            assert answer.status_code == status, (body, answer.text)
            if code is not None:
                assert answer.json()["error"]["code"] == code
        missing = root.post(
            "/v1/tasks/00000000-0000-4000-8000-000000000000/signal", json={"name": "approval"}
        )
        assert missing.status_code == 404
        assert history_of(root, release["id"]) == ["TaskEnqueued"]

        own = root.post("/v1/tasks", json={"type": "code.release", "args": {}}).json()
        refused = root.post(f"/v1/tasks/{own['id']}/signal", json={"name": "approval"})
        assert refused.status_code == 403  # signal_by_other: root enqueued it
        assert "may not deliver its signals" in refused.json()["error"]["message"]

        approved = cris.post(path, json={"name": "approval", "data": {"note": "ok"}})
        assert approved.status_code == 200
        assert approved.json()["workflow"]["signals"] == {"approval": {"note": "ok"}}
        wait_until(lambda: task_of(ada, release["id"])["state"] == "succeeded")
        again = cris.post(path, json={"name": "approval"})
        assert again.status_code == 409  # it has ended


def test_a_task_waiting_too_long_for_its_signal_times_out_for_good(live: LiveServer) -> None:
    with live.client("root-token") as root:
        gate = root.post("/v1/tasks", json={"type": "quick_gate", "args": {}}).json()
        assert gate["state"] == "waiting"
        wait_until(lambda: task_of(root, gate["id"])["state"] == "failed", timeout=30)
        failed = task_of(root, gate["id"])
        assert failed["timeout_kind"] == "signal_wait"
        late = root.post(f"/v1/tasks/{gate['id']}/signal", json={"name": "approval"})
        assert late.status_code == 409
        assert history_of(root, gate["id"]) == ["TaskEnqueued", "TaskTimedOut"]


def test_the_task_shows_its_latest_progress_while_it_runs(live: LiveServer, tmp_path: Path) -> None:
    until = tmp_path / "go"
    with live.client("root-token") as root:
        task = root.post(
            "/v1/tasks",
            json={
                "type": "progress",
                "args": {"fraction": 0.7, "message": "70%", "until": str(until)},
            },
        ).json()
        wait_until(lambda: task_of(root, task["id"])["progress"] is not None, timeout=30)
        running = task_of(root, task["id"])
        assert running["state"] == "running"
        assert running["progress"] == {"fraction": 0.7, "message": "70%"}
        until.touch()
        wait_until(lambda: task_of(root, task["id"])["state"] == "succeeded")
        assert "TaskHeartbeat" in history_of(root, task["id"])


def test_the_graph_and_the_dataset_show_the_run_time_tree(live: LiveServer) -> None:
    with live.client("ada-token") as ada, live.client("root-token") as root:
        parent = ada.post("/v1/tasks", json={"type": "fan.out", "args": {"numbers": [1, 2]}})
        parent_id = parent.json()["id"]
        wait_until(lambda: task_of(ada, parent_id)["state"] == "succeeded", timeout=30)
        children = task_of(ada, parent_id)["workflow"]["children"]
        graph = ada.get("/v1/graph", params={"task": children[0]}).json()
        assert graph["parent_id"] == parent_id and graph["children"] == []

        export = root.get("/v1/dataset", params={"kind": "workflow"})
        assert export.status_code == 200
        steps = [json.loads(line) for line in export.text.splitlines()]
        mine = [s for s in steps if parent_id in (s["task_id"], s["parent_id"])]
        assert [s["step"] for s in mine] == [
            "children_spawned",
            "enqueued_child",
            "enqueued_child",
            "child_ended",
            "child_ended",
        ]
        assert mine[0]["children"] == 2 and mine[0]["wait"] is True
        assert {s["task_id"] for s in mine[1:3]} == set(children)
        assert {s["child_state"] for s in mine[3:]} == {"succeeded"}
        bad = root.get("/v1/dataset", params={"kind": "steps"})
        assert bad.status_code == 400
