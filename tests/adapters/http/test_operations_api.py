"""Registry discovery, queues, workers, health, metrics and the limits (429, 503) over
real HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from execution_ledger.adapters.http.limits import HttpLimits
from execution_ledger.adapters.runtime import Runtime, open_runtime
from tests.adapters.http.live_server import LiveServer, runtime_with_file


def test_task_types_describe_every_registered_type(server: LiveServer, runtime: Runtime) -> None:
    with server.client() as client:
        listed = client.get("/v1/task-types").json()["task_types"]
    registry = runtime.settings.config.registry
    assert [t["name"] for t in listed] == sorted(registry.task_types)
    step = next(t for t in listed if t["name"] == "agent.step")
    assert step["adapter"] == "python" and step["queue"] == "agents"
    assert step["lane"] == "agent:{agent_id}"
    assert step["timeouts"]["start_to_close"] == 300.0
    assert step["retry"]["max_attempts"] == 3
    assert step["schema"]["required"] == ["agent_id"]
    assert step["roles"] == ["admin", "coder", "tester", "critic"]
    assert step["may_enqueue"] is True


def test_a_task_type_shows_statistics_of_its_tasks(worker_server: LiveServer) -> None:
    with worker_server.client() as client:
        for a in (1, 2):
            client.post(
                "/v1/tasks", params={"wait": 20}, json={"type": "add", "args": {"a": a, "b": 1}}
            )
        detail = _eventually(
            client,
            "/v1/task-types/add",
            lambda d: d["statistics"]["tasks"] == 2 and d["statistics"]["attempts"] == 2,
        )
        assert detail["name"] == "add"
        assert detail["statistics"]["by_state"] == {"succeeded": 2}
        assert detail["statistics"]["success_rate"] == 1.0
        assert detail["statistics"]["run_seconds"]["count"] == 2
        missing = client.get("/v1/task-types/no-such-type")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "unknown_task_type"


def test_queues_pause_and_resume_and_refuse_a_repeated_change(server: LiveServer) -> None:
    with server.client() as client:
        client.post("/v1/tasks", json={"type": "echo"})
        queues = {q["name"]: q for q in client.get("/v1/queues").json()["queues"]}
        assert set(queues) == {"default", "agents"}
        assert queues["default"]["concurrency"] == 10 and queues["default"]["paused"] is False
        assert client.post("/v1/queues/default/pause").json()["paused"] is True
        again = client.post("/v1/queues/default/pause")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "invalid_transition"
        paused = {q["name"]: q["paused"] for q in client.get("/v1/queues").json()["queues"]}
        assert paused == {"default": True, "agents": False}
        assert client.post("/v1/queues/default/resume").json()["paused"] is False
        assert client.post("/v1/queues/default/resume").status_code == 409
        unknown = client.post("/v1/queues/nowhere/pause")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "unknown_queue"


def test_workers_show_their_last_heartbeat_and_running_attempts(
    worker_server: LiveServer,
) -> None:
    with worker_server.client() as client:
        task_id = client.post("/v1/tasks", json={"type": "sleep", "args": {"seconds": 3}}).json()[
            "id"
        ]
        workers = _eventually(
            client, "/v1/workers", lambda d: any(w["running"] for w in d["workers"])
        )["workers"]
        client.post(f"/v1/tasks/{task_id}/cancel")
    (worker,) = workers
    assert worker["last_seen"] and worker["seconds_since_seen"] < 30
    assert set(worker["queues"]) == {"default", "agents"}
    (attempt,) = worker["running"]
    assert attempt["task_id"] == task_id and attempt["attempt"] == 1


def test_metrics_expose_depth_running_throughput_and_latency_histograms(
    worker_server: LiveServer,
) -> None:
    with worker_server.client() as client:
        for _ in range(3):
            response = client.post("/v1/tasks", params={"wait": 20}, json={"type": "echo"})
            assert response.status_code == 200
        text = _eventually_text(
            client,
            "/metrics",
            'ledger_tasks_finished_total{queue="default",state="succeeded",type="echo"} 3.0',
        )
    assert 'ledger_queue_depth{queue="default"}' in text
    assert 'ledger_running{queue="default"}' in text
    assert 'ledger_task_run_seconds_count{queue="default",type="echo"} 3.0' in text
    assert 'ledger_task_latency_seconds_bucket{le="+Inf",queue="default",type="echo"} 3.0' in text
    assert 'ledger_task_queue_wait_seconds_sum{queue="default",type="echo"}' in text
    assert "ledger_workers 1.0" in text
    assert 'ledger_http_requests_total{method="POST",route="/v1/tasks",status="200"} 3.0' in text


def test_health_answers_200_with_the_log_head(server: LiveServer) -> None:
    with server.client() as client:
        client.post("/v1/tasks", json={"type": "echo"})
        health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["head"] == 1


@pytest.fixture
def unreachable_runtime(ledger_env: None) -> Iterator[Runtime]:
    """A runtime whose database connections are gone (its pool is closed)."""
    rt = open_runtime(pool_size=1)
    rt.store.close()
    yield rt


def test_an_unavailable_database_is_503_with_retry_after(unreachable_runtime: Runtime) -> None:
    with LiveServer(unreachable_runtime) as live, live.client() as client:
        for response in (
            client.get("/healthz"),
            client.get("/v1/tasks"),
            client.post("/v1/tasks", json={"type": "echo"}),
        ):
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "database_unavailable"
            assert response.headers["Retry-After"] == "1"


def test_more_requests_than_the_rate_limit_are_429_with_retry_after(runtime: Runtime) -> None:
    limits = HttpLimits(requests_per_second=0.5, burst=3)
    with LiveServer(runtime, limits=limits) as live, live.client() as client:
        statuses = [client.get("/v1/queues").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        refused = client.get("/v1/queues")
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1


def test_a_waiting_call_beyond_the_limit_is_429_and_enqueues_nothing(runtime: Runtime) -> None:
    with LiveServer(runtime, limits=HttpLimits(max_waiting=0)) as live, live.client() as client:
        refused = client.post("/v1/tasks", params={"wait": 1}, json={"type": "echo"})
        assert refused.status_code == 429
        assert client.get("/v1/events").json()["head"] == 0
        assert client.get("/v1/events/stream").status_code == 429
        assert client.post("/v1/tasks", json={"type": "echo"}).status_code == 201


def test_the_server_caps_how_long_an_enqueue_waits(runtime: Runtime) -> None:
    limits = HttpLimits(max_wait_seconds=0.2)
    with LiveServer(runtime, limits=limits) as live, live.client(timeout=20) as client:
        # Asked to wait 30 s for a task no worker runs: the cap answers 202 first (a wait of
        # 30 s would end the client's 20 s timeout with an error instead).
        response = client.post("/v1/tasks", params={"wait": 30}, json={"type": "echo"})
        assert response.status_code == 202
        assert response.json()["state"] == "ready"


def test_unknown_routes_and_methods_answer_json_errors(server: LiveServer) -> None:
    with server.client() as client:
        missing = client.get("/v1/nothing-here")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        wrong = client.delete("/v1/tasks")
        assert wrong.status_code == 405
        assert wrong.json()["error"]["code"] == "method_not_allowed"


def _eventually(
    client: httpx.Client, path: str, done: Callable[[Any], bool], timeout: float = 15.0
) -> Any:
    """GET ``path`` until ``done(body)`` (the read models trail the log by a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(path).json()
        if done(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def _eventually_text(client: httpx.Client, path: str, needle: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = client.get(path).text
        if needle in text or time.monotonic() > deadline:
            assert needle in text, text
            return text
        time.sleep(0.05)


def test_schedules_are_listed_with_next_fire_times_and_can_be_paused(
    ledger_env: None, tmp_path: Path
) -> None:
    text = (
        '[task_types.beat]\nadapter = "python"\nsettings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }\n'
        '[schedules.nightly]\ncron = "0 3 * * *"\ntimezone = "Europe/Paris"\ntask_type = "beat"\n'
    )
    with (
        runtime_with_file(tmp_path, text) as runtime,
        LiveServer(runtime) as live,
        live.client() as client,
    ):
        (listed,) = client.get("/v1/schedules").json()["schedules"]
        assert (listed["name"], listed["paused"], listed["timezone"]) == (
            "nightly",
            False,
            "Europe/Paris",
        )
        assert listed["next_fire"].endswith(("+01:00", "+02:00"))
        paused = client.post("/v1/schedules/nightly/pause")
        assert (
            paused.status_code == 200
            and paused.json()["paused"]
            and paused.json()["next_fire"] is None
        )
        assert client.post("/v1/schedules/nightly/pause").status_code == 409
        assert client.post("/v1/schedules/nope/resume").status_code == 404
        assert client.post("/v1/schedules/nightly/resume").json()["paused"] is False
