"""Bulk actions over real HTTP on a real PostgreSQL: a dry run that changes nothing, each
action from its 202 to its completed progress, bad requests refused with a 400 that says
why (nothing written), roles that may not act on some of the matches refused with a
recorded 403."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import httpx
import pytest

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from tests.adapters.http.live_server import TOKENS, LiveServer
from tests.helpers import fail, succeed


def enqueue(runtime: Runtime, count: int, type_name: str = "echo", **fields: Any) -> list[str]:
    ids = [
        str(runtime.ledger.enqueue(TaskRequest(type_name, {"n": n}, **fields)).id)
        for n in range(count)
    ]
    runtime.catch_up()
    return ids


def finished(client: httpx.Client, started: httpx.Response, seconds: float = 30) -> dict[str, Any]:
    """The action's progress once it is no longer running."""
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    deadline = time.monotonic() + seconds
    while True:
        progress = client.get(location)
        assert progress.status_code == 200
        if progress.json()["state"] != "running" or time.monotonic() > deadline:
            return progress.json()
        time.sleep(0.05)


def state_of(client: httpx.Client, task_id: str) -> str:
    return client.get(f"/v1/tasks/{task_id}").json()["state"]


def test_a_dry_run_answers_the_count_and_a_sample_and_changes_nothing(
    server: LiveServer, runtime: Runtime
) -> None:
    tagged = enqueue(runtime, 3, tags=("nightly",))
    enqueue(runtime, 2)
    head = runtime.store.head_position()
    with server.client() as client:
        answer = client.post(
            "/v1/bulk",
            json={"action": "cancel", "filter": {"tag": "nightly"}, "dry_run": True},
        )
        assert answer.status_code == 200
        assert answer.json() == {
            "dry_run": True,
            "action": "cancel",
            "filter": {"tag": "nightly"},
            "matched": 3,
            "sample": tagged,
        }
        assert {state_of(client, t) for t in tagged} == {"ready"}
    assert runtime.store.head_position() == head


def test_a_bulk_cancel_runs_to_completion_and_names_its_principal(
    server: LiveServer, runtime: Runtime
) -> None:
    tagged = enqueue(runtime, 3, tags=("nightly",))
    other = enqueue(runtime, 1)
    with server.client() as client:
        started = client.post(
            "/v1/bulk",
            json={"action": "cancel", "filter": {"tag": "nightly"}, "reason": "bad deploy"},
        )
        assert started.json()["matched"] == 3
        done = finished(client, started)
        assert {k: done[k] for k in ("state", "matched", "changed", "skipped", "principal")} == {
            "state": "completed",
            "matched": 3,
            "changed": 3,
            "skipped": 0,
            "principal": "local",
        }
        assert {state_of(client, t) for t in tagged} == {"cancelled"}
        assert state_of(client, other[0]) == "ready"
        history = client.get(f"/v1/tasks/{tagged[0]}/history").json()["events"]
        cancel = history[-1]
        assert (cancel["type"], cancel["principal"]) == ("TaskCancelled", "local")
        assert cancel["data"]["bulk_id"] == done["id"]
        assert cancel["data"]["reason"] == "bad deploy"
        kinds = client.get("/v1/events", params={"type": "BulkActionRequested"}).json()["events"]
        assert [(e["aggregate_id"], e["principal"]) for e in kinds] == [(done["id"], "local")]


def test_a_bulk_retry_schedules_the_failed_matches_again(
    server: LiveServer, runtime: Runtime
) -> None:
    failed = enqueue(runtime, 2)
    for task_id in failed:
        fail(runtime.store, UUID(task_id))
    runtime.catch_up()
    with server.client() as client:
        started = client.post("/v1/bulk", json={"action": "retry", "filter": {"state": "failed"}})
        done = finished(client, started)
        assert (done["changed"], done["skipped"]) == (2, 0)
        assert {state_of(client, t) for t in failed} == {"scheduled"}


def test_reprioritised_tasks_come_first_in_their_queues_ready_set(
    server: LiveServer, runtime: Runtime
) -> None:
    enqueue(runtime, 2)
    urgent = enqueue(runtime, 2, tags=("urgent",))
    with server.client() as client:
        started = client.post(
            "/v1/bulk",
            json={"action": "reprioritise", "filter": {"tag": "urgent"}, "priority": 500},
        )
        done = finished(client, started)
        assert (done["changed"], done["priority"]) == (2, 500)
        assert client.get(f"/v1/tasks/{urgent[0]}").json()["priority"] == 500
        runtime.catch_up()
        ready = client.get("/v1/ready", params={"queue": "default"}).json()["tasks"]
        assert [(t["id"], t["priority"]) for t in ready[:2]] == [(u, 500) for u in urgent]


def test_moved_tasks_are_in_their_new_queues_ready_set(
    server: LiveServer, runtime: Runtime
) -> None:
    moved = enqueue(runtime, 2, tags=("agentic",))
    with server.client() as client:
        started = client.post(
            "/v1/bulk",
            json={"action": "move", "filter": {"tag": "agentic"}, "queue": "agents"},
        )
        assert finished(client, started)["changed"] == 2
        assert client.get(f"/v1/tasks/{moved[0]}").json()["queue"] == "agents"
        runtime.catch_up()
        ready = client.get("/v1/ready", params={"queue": "agents"}).json()["tasks"]
        assert {t["id"] for t in ready} == set(moved)
        listed = client.get("/v1/tasks", params={"queue": "agents"}).json()["tasks"]
        assert {t["id"] for t in listed} == set(moved)


def test_a_task_that_ended_after_the_count_is_skipped_and_counted(
    server: LiveServer, runtime: Runtime
) -> None:
    tasks = enqueue(runtime, 3, tags=("t",))
    succeed(runtime.store, UUID(tasks[1]))  # in the log; the task view (no worker) lags
    with server.client() as client:
        started = client.post("/v1/bulk", json={"action": "cancel", "filter": {"tag": "t"}})
        assert started.json()["matched"] == 3
        done = finished(client, started)
        assert (done["state"], done["changed"], done["skipped"]) == ("completed", 2, 1)
        assert [state_of(client, t) for t in tasks] == ["cancelled", "succeeded", "cancelled"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"action": "cancel", "filter": {}}, "name at least one filter"),
        ({"action": "cancel", "filter": {"state": "gone"}}, "unknown state 'gone' (valid: "),
        ({"action": "cancel", "filter": {"colour": "red"}}, "unknown filter 'colour'"),
        ({"action": "cancel", "filter": {"queue": "nowhere"}}, "unknown queue 'nowhere'"),
        ({"action": "cancel", "filter": {"since": "yesterday"}}, "since is not an ISO 8601"),
        (
            {"action": "cancel", "filter": {"since": "2026-01-01T00:00:00"}},
            "since needs a time zone",
        ),
        (
            {
                "action": "cancel",
                "filter": {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            },
            "since must be before until",
        ),
        ({"action": "purge", "filter": {"state": "ready"}}, "unknown bulk action 'purge'"),
        ({"action": "retry", "filter": {"state": "ready"}}, "no task in state 'ready'"),
        (
            {"action": "reprioritise", "filter": {"state": "ready"}, "priority": 5000},
            "priority must be between -1000 and 1000",
        ),
        (
            {"action": "move", "filter": {"state": "ready"}, "queue": "nowhere"},
            "unknown queue 'nowhere' to move to",
        ),
    ],
)
def test_a_bad_request_is_a_400_that_says_why_and_changes_nothing(
    server: LiveServer, runtime: Runtime, body: dict[str, Any], message: str
) -> None:
    enqueue(runtime, 1)
    head = runtime.store.head_position()
    with server.client() as client:
        for dry_run in (False, True):
            refused = client.post("/v1/bulk", json={**body, "dry_run": dry_run})
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["code"] == "invalid_query"
            assert message in refused.json()["error"]["message"]
    assert runtime.store.head_position() == head


def test_a_body_of_the_wrong_shape_is_a_422(server: LiveServer) -> None:
    with server.client() as client:
        assert client.post("/v1/bulk", json={"action": "cancel"}).status_code == 422
        wrong = client.post("/v1/bulk", json={"action": "cancel", "filter": {"tag": 3}})
        assert wrong.status_code == 422


def test_an_unknown_or_malformed_bulk_id_is_refused(server: LiveServer) -> None:
    with server.client() as client:
        missing = client.get(f"/v1/bulk/{UUID(int=7)}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "bulk_action_not_found"
        assert client.get("/v1/bulk/not-a-uuid").status_code == 400


def test_a_role_that_may_not_act_on_some_matches_is_refused_and_nothing_changes(
    secured_server: LiveServer, secured_runtime: Runtime
) -> None:
    echo = enqueue(secured_runtime, 2, tags=("mixed",))
    failing = enqueue(secured_runtime, 1, "fail", tags=("mixed",))
    head = secured_runtime.store.head_position()
    with secured_server.client(TOKENS["critic"]) as critic:  # may_cancel = false
        refused = critic.post("/v1/bulk", json={"action": "cancel", "filter": {"tag": "mixed"}})
        assert refused.status_code == 403
        assert "may not cancel" in refused.json()["error"]["message"]
    with secured_server.client(TOKENS["coder"]) as coder:  # echo, add, sleep only
        body = {"action": "reprioritise", "filter": {"tag": "mixed"}, "priority": 9}
        for dry_run in (True, False):
            refused = coder.post("/v1/bulk", json={**body, "dry_run": dry_run})
            assert refused.status_code == 403
            assert "may not reprioritise tasks of type 'fail'" in refused.json()["error"]["message"]
        # Without the type it may not touch, the same action goes through.
        allowed = coder.post("/v1/bulk", json={**body, "filter": {"tag": "mixed", "type": "echo"}})
        assert finished(coder, allowed)["changed"] == 2
    with secured_server.client(TOKENS["admin"]) as admin:
        denied = admin.get("/v1/events", params={"type": "AccessDenied"}).json()["events"]
        assert [(e["data"]["principal"], e["data"]["action"]) for e in denied] == [
            ("cris", "bulk.start"),
            ("carol", "bulk.start"),
            ("carol", "bulk.start"),
        ]
        assert admin.get(f"/v1/tasks/{failing[0]}").json()["priority"] == 0
        assert {admin.get(f"/v1/tasks/{t}").json()["priority"] for t in echo} == {9}
    changes = [type(e.event).__name__ for e in secured_runtime.store.read(head, 100)]
    assert "TaskCancelled" not in changes
    assert changes.count("TaskReprioritised") == 2
