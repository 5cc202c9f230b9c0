"""Singletons and debounce over HTTP: ``POST /v1/tasks`` answers 201 for a new task and 200
with the task it was coalesced into (``coalesced`` names the key); bad options are 422 and
store nothing; the OpenAPI document describes the fields."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.adapters.http.live_server import LiveServer


def head(client) -> int:
    return client.get("/v1/events").json()["head"]


def test_a_held_singleton_key_answers_200_with_the_holder(server: LiveServer) -> None:
    body = {"type": "echo", "args": {"customer": "acme"}, "singleton": "report:{customer}"}
    with server.client() as client:
        first = client.post("/v1/tasks", json=body)
        before = head(client)
        again = client.post("/v1/tasks", json={**body, "args": {"customer": "acme", "n": 2}})
        after = head(client)
        other = client.post("/v1/tasks", json={**body, "args": {"customer": "globex"}})
    assert first.status_code == 201 and "coalesced" not in first.json()
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["coalesced"] == "singleton"
    assert again.headers["Location"] == f"/v1/tasks/{first.json()['id']}"
    assert after == before  # nothing stored
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    with server.client() as client:
        shown = client.get(f"/v1/tasks/{first.json()['id']}").json()
    assert (shown["singleton_key"], shown["debounce_key"]) == ("report:acme", None)


def test_a_held_idempotency_key_says_so(server: LiveServer) -> None:
    body = {"type": "echo", "idempotency_key": "order-1"}
    with server.client() as client:
        first = client.post("/v1/tasks", json=body)
        again = client.post("/v1/tasks", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["coalesced"] == "idempotency_key"


def test_a_debounced_burst_answers_201_then_200_with_the_pending_task(server: LiveServer) -> None:
    def body(n: int) -> dict[str, object]:
        return {"type": "echo", "args": {"n": n}, "debounce": {"key": "sync", "window": "1m"}}

    with server.client() as client:
        first = client.post("/v1/tasks", json=body(1))
        second = client.post("/v1/tasks", json=body(2))
        task = client.get(f"/v1/tasks/{first.json()['id']}").json()
        history = client.get(f"/v1/tasks/{first.json()['id']}/history").json()
    assert first.status_code == 201 and first.json()["state"] == "scheduled"
    assert second.status_code == 200 and second.json()["coalesced"] == "debounce"
    assert second.json()["id"] == first.json()["id"] and second.json()["args"] == {"n": 2}
    assert task["args"] == {"n": 2}
    assert (task["debounce_key"], task["singleton_key"]) == ("sync", None)
    assert datetime.fromisoformat(task["run_at"]) > datetime.fromisoformat(first.json()["run_at"])
    assert [e["type"] for e in history["events"]] == ["TaskEnqueued", "TaskDebounced"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"singleton": ""}, "singleton"),
        ({"singleton": "r:{missing}"}, "needs the argument 'missing'"),
        ({"debounce": {"key": "k"}}, "window"),
        ({"debounce": {"key": "k", "window": "soon"}}, "cannot read duration"),
        ({"debounce": {"key": "", "window": "5s"}}, "key"),
        ({"debounce": {"key": "k", "window": "5s", "mode": "middle"}}, "mode"),
        ({"debounce": {"key": "k", "window": "5m", "max_wait": "1m"}}, "max_wait"),
        ({"debounce": {"key": "k", "window": "5s"}, "idempotency_key": "i"}, "idempotency key"),
        ({"debounce": {"key": "k", "window": "5s"}, "singleton": "s"}, "singleton"),
    ],
)
def test_bad_options_are_422_and_store_nothing(
    server: LiveServer, extra: dict[str, object], message: str
) -> None:
    with server.client() as client:
        before = head(client)
        response = client.post("/v1/tasks", json={"type": "echo", **extra})
        after = head(client)
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]
    assert after == before


def test_the_openapi_document_describes_the_options(server: LiveServer) -> None:
    with server.client() as client:
        document = client.get("/openapi.json").json()
    submission = document["components"]["schemas"]["TaskSubmission"]["properties"]
    assert "template" in submission["singleton"]["description"]
    assert submission["debounce"]["required"] == ["key", "window"]
    assert submission["debounce"]["properties"]["mode"]["enum"] == ["last", "first"]
    assert "first submission" in submission["debounce"]["properties"]["max_wait"]["description"]
    task = document["components"]["schemas"]["Task"]["properties"]
    assert task["coalesced"]["enum"] == ["idempotency_key", "singleton", "debounce"]


def test_a_retry_that_would_make_a_second_holder_is_409(server: LiveServer) -> None:
    body = {"type": "echo", "singleton": "only-one"}
    with server.client() as client:
        first = client.post("/v1/tasks", json=body).json()["id"]
        client.post(f"/v1/tasks/{first}/cancel", json={})
        second = client.post("/v1/tasks", json=body)
        retry = client.post(f"/v1/tasks/{first}/retry")
        state = client.get(f"/v1/tasks/{first}").json()["state"]
    assert second.status_code == 201
    assert retry.status_code == 409
    assert retry.json()["error"]["code"] == "singleton_key_taken"
    assert state == "cancelled"


def test_a_waiting_enqueue_says_which_task_it_waited_on(server: LiveServer) -> None:
    body = {"type": "echo", "singleton": "waited"}
    with server.client() as client:
        first = client.post("/v1/tasks", json=body).json()
        waited = client.post("/v1/tasks?wait=0.1", json=body)
    assert waited.status_code == 202  # no worker here: the holder is still queued
    assert waited.json()["id"] == first["id"] and waited.json()["coalesced"] == "singleton"
