"""Tasks over real HTTP: enqueue (and wait), read, list with cursors, history, cancel, retry,
DAGs and their graph, the ready set, and the 4xx answers that change nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from execution_ledger.adapters.http.limits import HttpLimits
from execution_ledger.adapters.runtime import Runtime
from tests.adapters.http.live_server import LiveServer, runtime_with_file


def head(client) -> int:
    return client.get("/v1/events").json()["head"]


def test_enqueue_answers_201_with_the_task_and_its_location(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/tasks",
            json={"type": "add", "args": {"a": 1, "b": 2}, "tags": ["t1"], "priority": 5},
        )
    assert response.status_code == 201
    task = response.json()
    assert response.headers["Location"] == f"/v1/tasks/{task['id']}"
    assert task["type"] == "add" and task["adapter"] == "python"
    assert task["state"] == "ready" and task["args"] == {"a": 1, "b": 2}
    assert task["principal"] == "local" and task["role"] == "admin"
    assert task["priority"] == 5 and task["tags"] == ["t1"]
    assert task["timeouts"]["start_to_close"] == 300.0 and task["max_attempts"] == 3


def test_a_task_reads_current_to_its_last_event(server: LiveServer) -> None:
    with server.client() as client:
        task_id = client.post("/v1/tasks", json={"type": "echo"}).json()["id"]
        client.post(f"/v1/tasks/{task_id}/cancel", json={"reason": "not needed"})
        task = client.get(f"/v1/tasks/{task_id}").json()
    assert task["state"] == "cancelled"
    assert task["error"] == {"class": "Cancelled", "message": "not needed", "by": "local"}
    assert task["finished_at"] is not None and task["version"] == 2


@pytest.mark.parametrize("task_id", ["0b9c5a8e-1d2f-4c3b-9a7e-5f6d4c3b2a10", "not-a-uuid"])
def test_an_unknown_task_is_404(server: LiveServer, task_id: str) -> None:
    with server.client() as client:
        for method, path in (
            ("GET", f"/v1/tasks/{task_id}"),
            ("GET", f"/v1/tasks/{task_id}/history"),
            ("POST", f"/v1/tasks/{task_id}/cancel"),
            ("POST", f"/v1/tasks/{task_id}/retry"),
        ):
            response = client.request(method, path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "task_not_found"


def test_bad_json_is_400_and_stores_nothing(server: LiveServer) -> None:
    with server.client() as client:
        for body in (b"{not json", b"", b'{"type": "echo", "args": {"x": NaN}}', b"\xff\xfe"):
            response = client.post(
                "/v1/tasks", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "bad_json"
        assert head(client) == 0


def test_a_body_over_the_size_cap_is_413_and_stores_nothing(runtime: Runtime) -> None:
    limits = HttpLimits(max_body_bytes=64 * 1024)
    with LiveServer(runtime, limits=limits) as live, live.client() as client:
        big = {"type": "echo", "args": {"blob": "x" * 100_000}}
        response = client.post("/v1/tasks", json=big)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert head(client) == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"type": "no.such.type"}, "unknown_task_type"),
        ({"type": "add", "args": {"a": 1}}, "schema_violation"),
        ({"type": "echo", "depends_on": [str(uuid.uuid4())]}, "unknown_dependency"),
        ({"type": "echo", "depends_on": ["not-an-id"]}, "unknown_dependency"),
        ({"type": "echo", "priority": "high"}, "invalid_submission"),
        ({"type": "echo", "colour": "red"}, "invalid_submission"),
        ({"type": "echo", "args": {"text": "a\u0000b"}}, "invalid_submission"),
        ({"type": "echo", "timeouts": {"start_to_close": "soon"}}, "invalid_submission"),
        ({"type": "echo", "run_at": "2030-01-01T00:00:00"}, "invalid_submission"),
        ([{"type": "echo"}], "invalid_submission"),
    ],
)
def test_a_refused_submission_is_422_and_stores_nothing(
    server: LiveServer, body: object, code: str
) -> None:
    with server.client() as client:
        response = client.post("/v1/tasks", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == code
        assert head(client) == 0


@pytest.mark.parametrize(
    ("tasks", "code"),
    [
        (
            [
                {"ref": "a", "type": "echo", "depends_on": ["b"]},
                {"ref": "b", "type": "echo", "depends_on": ["a"]},
            ],
            "dependency_cycle",
        ),
        ([{"ref": "a", "type": "echo", "depends_on": ["nowhere"]}], "unknown_dependency"),
        ([{"ref": "a", "type": "echo"}, {"ref": "b", "type": "nope"}], "unknown_task_type"),
        ([{"ref": "a", "type": "echo"}, {"ref": "a", "type": "echo"}], "invalid_submission"),
        ([{"type": "echo"}], "invalid_submission"),
        ([], "invalid_submission"),
    ],
)
def test_a_refused_graph_is_422_and_stores_nothing(
    server: LiveServer, tasks: list[dict[str, object]], code: str
) -> None:
    with server.client() as client:
        response = client.post("/v1/graphs", json={"tasks": tasks})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == code
        assert head(client) == 0


def test_cancelling_a_cancelled_task_is_409(server: LiveServer) -> None:
    with server.client() as client:
        task_id = client.post("/v1/tasks", json={"type": "echo"}).json()["id"]
        assert client.post(f"/v1/tasks/{task_id}/cancel").status_code == 200
        again = client.post(f"/v1/tasks/{task_id}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_transition"


def test_retry_schedules_a_cancelled_task_again_and_refuses_a_waiting_one(
    server: LiveServer,
) -> None:
    with server.client() as client:
        task_id = client.post("/v1/tasks", json={"type": "echo"}).json()["id"]
        assert client.post(f"/v1/tasks/{task_id}/retry").status_code == 409
        client.post(f"/v1/tasks/{task_id}/cancel")
        retried = client.post(f"/v1/tasks/{task_id}/retry")
    assert retried.status_code == 200
    assert retried.json()["state"] == "scheduled"


def test_a_graph_is_enqueued_atomically_and_read_back_as_nodes_and_edges(
    server: LiveServer, runtime: Runtime
) -> None:
    with server.client() as client:
        stored = client.post("/v1/tasks", json={"type": "echo"}).json()["id"]
        response = client.post(
            "/v1/graphs",
            json={
                "tasks": [
                    {"ref": "fetch", "type": "echo", "args": {"url": "x"}},
                    {
                        "ref": "sum",
                        "type": "add",
                        "args": {"a": 1, "b": 2},
                        "depends_on": ["fetch"],
                    },
                    {"ref": "report", "type": "echo", "depends_on": ["sum", stored]},
                ]
            },
        )
        assert response.status_code == 201
        created = response.json()
        ids = created["tasks"]
        assert set(ids) == {"fetch", "sum", "report"} and created["graph_id"]
        report = client.get(f"/v1/tasks/{ids['report']}").json()
        assert report["state"] == "blocked" and report["ref"] == "report"
        assert set(report["depends_on"]) == {ids["sum"], stored}
        runtime.catch_up()
        graph = client.get("/v1/graph", params={"task": ids["fetch"]}).json()
    nodes = {node["id"]: node for node in graph["nodes"]}
    assert set(nodes) == {*ids.values(), stored}
    assert nodes[ids["fetch"]]["state"] == "ready" and nodes[ids["sum"]]["pending"] == 1
    assert {(e["from"], e["to"]) for e in graph["edges"]} == {
        (ids["fetch"], ids["sum"]),
        (ids["sum"], ids["report"]),
        (stored, ids["report"]),
    }
    assert graph["truncated"] is False


def test_the_graph_of_an_unknown_task_is_404_and_a_missing_task_is_400(
    server: LiveServer,
) -> None:
    with server.client() as client:
        assert client.get("/v1/graph", params={"task": str(uuid.uuid4())}).status_code == 404
        assert client.get("/v1/graph").status_code == 400
        assert client.get("/v1/graph", params={"task": "x"}).status_code == 400


def test_task_lists_filter_and_page_with_cursors(server: LiveServer, runtime: Runtime) -> None:
    with server.client() as client:
        made = [
            client.post("/v1/tasks", json={"type": "echo", "tags": ["batch"]}).json()["id"]
            for _ in range(5)
        ]
        client.post("/v1/tasks", json={"type": "add", "args": {"a": 1, "b": 1}})
        client.post(f"/v1/tasks/{made[0]}/cancel")
        runtime.catch_up()
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"tag": "batch", "limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/tasks", params=params).json()
            seen += [task["id"] for task in page["tasks"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3 and seen == list(reversed(made))
        assert len(client.get("/v1/tasks", params={"type": "add"}).json()["tasks"]) == 1
        cancelled = client.get("/v1/tasks", params={"state": "cancelled"}).json()["tasks"]
        assert [task["id"] for task in cancelled] == [made[0]]
        assert client.get("/v1/tasks", params={"state": "asleep"}).status_code == 400
        assert client.get("/v1/tasks", params={"limit": 0}).status_code == 400
        assert client.get("/v1/tasks", params={"cursor": "%%%"}).status_code == 400


def test_the_ready_set_lists_a_queue_in_dispatch_order(
    server: LiveServer, runtime: Runtime
) -> None:
    with server.client() as client:
        low = client.post("/v1/tasks", json={"type": "echo", "priority": 1}).json()["id"]
        high = client.post("/v1/tasks", json={"type": "echo", "priority": 9}).json()["id"]
        runtime.catch_up()
        ready = client.get("/v1/ready", params={"queue": "default"}).json()
        assert [task["id"] for task in ready["tasks"]] == [high, low]
        assert client.get("/v1/ready", params={"queue": "nope"}).status_code == 404
        assert client.get("/v1/ready").status_code == 400


def test_history_lists_a_tasks_events_in_order_with_who_and_when(server: LiveServer) -> None:
    with server.client() as client:
        task_id = client.post("/v1/tasks", json={"type": "echo"}).json()["id"]
        client.post(f"/v1/tasks/{task_id}/cancel", json={"reason": "stop"})
        history = client.get(f"/v1/tasks/{task_id}/history").json()
    events = history["events"]
    assert [e["type"] for e in events] == ["TaskEnqueued", "TaskCancelled"]
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    assert all(e["principal"] == "local" and e["time"] for e in events)
    assert events[1]["data"] == {"by": "local", "reason": "stop", "bulk_id": None}


def test_waiting_enqueue_answers_200_with_the_result_once_a_worker_ran_it(
    worker_server: LiveServer,
) -> None:
    with worker_server.client() as client:
        response = client.post(
            "/v1/tasks",
            params={"wait": 20},
            json={"type": "agent.step", "args": {"agent_id": 7, "say": "hi"}},
        )
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["state"] == "succeeded" and task["lane"] == "agent:7"
    assert task["result"] == {"agent_id": 7, "say": "hi"}
    assert task["attempts"] == 1 and task["started_at"] and task["finished_at"]


def test_waiting_enqueue_answers_202_when_the_task_is_not_done_in_time(
    server: LiveServer,
) -> None:
    with server.client() as client:
        response = client.post("/v1/tasks", params={"wait": 0.3}, json={"type": "echo"})
        assert response.status_code == 202
        assert response.json()["state"] == "ready"
        assert (
            client.post("/v1/tasks", params={"wait": 61}, json={"type": "echo"}).status_code == 400
        )
        assert (
            client.post("/v1/tasks", params={"wait": "soon"}, json={"type": "echo"}).status_code
            == 400
        )


def test_a_repeated_enqueue_with_an_idempotency_key_is_200_with_the_first_task(
    runtime: Runtime,
) -> None:
    with LiveServer(runtime) as live, live.client() as client:
        body = {
            "type": "echo",
            "args": {"n": 1},
            "idempotency_key": "order-9",
            "idempotency_period": "1h",
        }
        first = client.post("/v1/tasks", json=body)
        head = client.get("/v1/events").json()["head"]
        again = client.post("/v1/tasks", json={**body, "args": {"n": 2}})
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"] and again.json()["args"] == {"n": 1}
        assert client.get("/v1/events").json()["head"] == head
        bad = client.post(
            "/v1/tasks", json={**body, "idempotency_key": "other", "idempotency_period": "soon"}
        )
        assert bad.status_code == 422


def test_the_body_cap_comes_from_the_configuration_file(ledger_env: None, tmp_path: Path) -> None:
    text = (
        '[http]\nmax_body_bytes = 4096\n\n[task_types.echo]\nadapter = "python"\n'
        'settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }\n'
    )
    with (
        runtime_with_file(tmp_path, text) as runtime,
        LiveServer(runtime) as live,
        live.client() as client,
    ):
        small = client.post("/v1/tasks", json={"type": "echo", "args": {"x": "y" * 100}})
        assert small.status_code == 201
        big = client.post("/v1/tasks", json={"type": "echo", "args": {"x": "y" * 8000}})
        assert big.status_code == 413
        assert big.json()["error"]["code"] == "payload_too_large"
