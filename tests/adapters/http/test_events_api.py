"""The global event log over real HTTP: pages after a position, filters, and the live stream
(server-sent events) resumed with Last-Event-ID."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from tests.adapters.http.live_server import TOKENS, LiveServer


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream into frames ({"id", "event", "data"})."""
    frame: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in frame:
                yield frame
            frame = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            frame[field] = value.removeprefix(" ")


def read_stream(client: httpx.Client, count: int, **options: Any) -> list[dict[str, Any]]:
    with client.stream("GET", "/v1/events/stream", **options) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        frames = []
        for frame in sse_events(response):
            frames.append(frame)
            if len(frames) == count:
                return frames
    raise AssertionError("the stream ended early")


def enqueue(client: httpx.Client, n: int) -> list[str]:
    return [client.post("/v1/tasks", json={"type": "echo"}).json()["id"] for _ in range(n)]


def test_the_log_pages_after_a_position(server: LiveServer) -> None:
    with server.client() as client:
        ids = enqueue(client, 3)
        first = client.get("/v1/events", params={"limit": 2}).json()
        assert [e["aggregate_id"] for e in first["events"]] == ids[:2]
        assert first["next_after"] == first["events"][-1]["position"] and first["head"] == 3
        rest = client.get("/v1/events", params={"after": first["next_after"]}).json()
        assert [e["aggregate_id"] for e in rest["events"]] == ids[2:]
        assert rest["next_after"] == 3
        assert client.get("/v1/events", params={"after": 3}).json()["events"] == []
        assert client.get("/v1/events", params={"after": -1}).status_code == 400
        assert client.get("/v1/events", params={"limit": 5000}).status_code == 400


def test_the_log_filters_by_type_task_and_principal(secured_server: LiveServer) -> None:
    with secured_server.client(TOKENS["admin"]) as admin:
        mine = enqueue(admin, 2)
        admin.post(f"/v1/tasks/{mine[0]}/cancel")
    with secured_server.client(TOKENS["coder"]) as coder:
        theirs = enqueue(coder, 1)
        by_type = coder.get("/v1/events", params={"type": "TaskCancelled"}).json()
        assert [e["aggregate_id"] for e in by_type["events"]] == [mine[0]]
        both = coder.get("/v1/events", params={"type": "TaskEnqueued,TaskCancelled"}).json()
        assert len(both["events"]) == 4
        by_task = coder.get("/v1/events", params={"task": mine[0]}).json()
        assert [e["type"] for e in by_task["events"]] == ["TaskEnqueued", "TaskCancelled"]
        by_carol = coder.get("/v1/events", params={"principal": "carol"}).json()
        assert [e["aggregate_id"] for e in by_carol["events"]] == theirs
        unknown = coder.get("/v1/events", params={"type": "TaskExploded"})
        assert unknown.status_code == 400
        assert unknown.json()["error"]["code"] == "invalid_query"


def test_the_stream_sends_events_with_their_positions_and_resumes_after_last_event_id(
    server: LiveServer,
) -> None:
    with server.client() as client:
        ids = enqueue(client, 3)
        frames = read_stream(client, 2, params={"after": 0})
        assert [int(f["id"]) for f in frames] == [1, 2]
        assert [f["event"] for f in frames] == ["TaskEnqueued", "TaskEnqueued"]
        assert json.loads(frames[0]["data"])["aggregate_id"] == ids[0]
        ids += enqueue(client, 1)
        resumed = read_stream(client, 2, headers={"Last-Event-ID": frames[-1]["id"]})
        assert [int(f["id"]) for f in resumed] == [3, 4]
        assert [json.loads(f["data"])["aggregate_id"] for f in resumed] == ids[2:]
        bad = client.get("/v1/events/stream", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 400


def test_the_stream_without_a_position_sends_new_events_as_they_are_appended(
    server: LiveServer,
) -> None:
    with server.client() as client:
        enqueue(client, 2)  # before the stream: not sent
        later: list[str] = []

        def enqueue_soon() -> None:
            with server.client() as other:
                later.extend(enqueue(other, 1))

        timer = threading.Timer(0.3, enqueue_soon)
        timer.start()
        try:
            (frame,) = read_stream(client, 1, params={"type": "TaskEnqueued"})
        finally:
            timer.join()
    assert int(frame["id"]) == 3
    assert json.loads(frame["data"])["aggregate_id"] == later[0]


def test_the_event_log_filters_by_time(runtime: Runtime) -> None:
    from datetime import UTC, datetime, timedelta

    runtime.ledger.enqueue(TaskRequest("echo"))
    middle = datetime.now(UTC)
    later = runtime.ledger.enqueue(TaskRequest("echo"))
    with LiveServer(runtime) as live, live.client() as client:
        since = client.get("/v1/events", params={"since": middle.isoformat()}).json()["events"]
        until = client.get("/v1/events", params={"until": middle.isoformat()}).json()["events"]
        future = client.get(
            "/v1/events", params={"since": (middle + timedelta(hours=1)).isoformat()}
        ).json()
        bad = client.get("/v1/events", params={"since": "yesterday"})
    assert [e["aggregate_id"] for e in since] == [str(later.id)]
    assert len(until) == 1 and future["events"] == []
    assert bad.status_code == 400 and "ISO 8601" in bad.json()["error"]["message"]
