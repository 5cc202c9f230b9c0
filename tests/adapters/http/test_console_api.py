"""What the web console adds to the API, over HTTP: its page and files (public, strict
headers, behind the Host check), the caller's access, the task list's time and text
filters, tasks ended per minute, the audit log and the last chain verification."""

from __future__ import annotations

from uuid import UUID

import pytest

from execution_ledger.adapters.runtime import Runtime
from tests.adapters.http.live_server import TOKENS, LiveServer
from tests.helpers import fail, start, succeed


def test_the_console_page_and_files_are_served_with_strict_headers(server: LiveServer) -> None:
    with server.client() as client:
        page = client.get("/")
        module = client.get("/console/app.js")
        assert client.get("/console/pages/tasks.js").status_code == 200
        missing = client.get("/console/nothing.js")
        escape = client.get("/console/..%2F..%2Froutes.py")
        rebound = client.get("/", headers={"Host": "rebound.example:80"})  # DNS rebinding
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert '<script type="module" src="/console/app.js">' in page.text
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-cache"
    assert module.headers["Content-Type"].startswith("text/javascript")
    assert "max-age" in module.headers["Cache-Control"]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert escape.status_code == 404
    assert rebound.status_code == 421 and "Content-Security-Policy" not in rebound.headers


def test_the_console_needs_no_token_but_the_api_behind_it_does(
    secured_server: LiveServer,
) -> None:
    with secured_server.client() as anonymous:
        assert anonymous.get("/").status_code == 200
        assert anonymous.get("/console/app.js").status_code == 200
        assert anonymous.get("/v1/tasks").status_code == 401
        access = anonymous.get("/v1/access")  # what the console asks first: no denial
        assert access.status_code == 200 and access.json()["signed_in"] is False
        assert anonymous.get("/v1/access", headers={"Authorization": "Bearer nope"}).status_code == 401
        denials = anonymous.get(
            "/v1/events",
            params={"type": "AccessDenied"},
            headers={"Authorization": f"Bearer {TOKENS['admin']}"},
        ).json()["events"]
    assert [e["data"]["action"] for e in denials] == ["tasks.list", "access.get"]


def test_access_says_what_the_callers_role_may_do(secured_server: LiveServer) -> None:
    with secured_server.client(TOKENS["critic"]) as critic:
        cris = critic.get("/v1/access").json()
    with secured_server.client(TOKENS["admin"]) as admin:
        alice = admin.get("/v1/access").json()
    with secured_server.client(TOKENS["coder"]) as coder:
        carol = coder.get("/v1/access").json()
    assert cris["principal"] == "cris" and cris["role"] == "critic"
    assert cris["may_cancel"] is False and cris["may_control"] is False
    assert cris["principals_configured"] is True
    assert carol["may_cancel"] is True and carol["task_types"] == ["echo", "add", "sleep"]
    assert carol["may_control"] is False
    assert alice["may_control"] is True


def test_without_principals_access_is_the_local_admin(server: LiveServer) -> None:
    with server.client() as client:
        access = client.get("/v1/access").json()
    assert access["principal"] == "local" and access["may_control"] is True
    assert access["principals_configured"] is False


def test_tasks_are_listed_by_text_in_args_or_error_and_by_enqueue_time(
    server: LiveServer, runtime: Runtime
) -> None:
    with server.client() as client:
        ids = [
            client.post("/v1/tasks", json={"type": "echo", "args": {"city": city}}).json()["id"]
            for city in ("Lyon", "Oslo", "50% off")
        ]
        fail(runtime.store, UUID(ids[1]))  # error message "boom"
        runtime.catch_up()
        first = client.get(f"/v1/tasks/{ids[0]}").json()["enqueued_at"]
        last = client.get(f"/v1/tasks/{ids[2]}").json()["enqueued_at"]

        def listed(**params: str) -> list[str]:
            response = client.get("/v1/tasks", params=params)
            assert response.status_code == 200, response.text
            return [t["id"] for t in response.json()["tasks"]]

        assert listed(text="lyon") == [ids[0]]
        assert listed(text="BOOM") == [ids[1]]
        assert listed(text="0% o") == [ids[2]]
        assert listed(text="%") == [ids[2]]  # a literal percent sign, not a wildcard
        assert listed(since=first, until=last) == [ids[1], ids[0]]
        assert listed(since=last) == [ids[2]]
        refused = client.get("/v1/tasks", params={"since": "yesterday"})
        naive = client.get("/v1/tasks", params={"until": "2026-01-01T00:00:00"})
    assert refused.status_code == 400 and "ISO 8601" in refused.json()["error"]["message"]
    assert naive.status_code == 400 and "time zone" in naive.json()["error"]["message"]


def test_activity_counts_the_tasks_ended_each_minute(server: LiveServer, runtime: Runtime) -> None:
    with server.client() as client:
        ids = [client.post("/v1/tasks", json={"type": "echo"}).json()["id"] for _ in range(4)]
        succeed(runtime.store, UUID(ids[0]))
        succeed(runtime.store, UUID(ids[1]))
        fail(runtime.store, UUID(ids[2]))
        client.post(f"/v1/tasks/{ids[3]}/cancel", json={})
        runtime.catch_up()
        minutes = client.get("/v1/activity", params={"minutes": 5}).json()["minutes"]
        default = client.get("/v1/activity").json()["minutes"]
        refused = [client.get("/v1/activity", params={"minutes": m}) for m in ("0", "1441", "x")]
    assert len(minutes) == 5 and len(default) == 60
    assert minutes[0]["minute"] < minutes[-1]["minute"]
    assert sum(m["succeeded"] for m in minutes) == 2
    assert sum(m["failed"] for m in minutes) == 1
    assert sum(m["other"] for m in minutes) == 1
    assert [r.status_code for r in refused] == [400, 400, 400]


def test_the_audit_log_filters_by_actor_and_shows_denials(
    secured_server: LiveServer, secured_runtime: Runtime
) -> None:
    with secured_server.client(TOKENS["admin"]) as admin:
        task_id = admin.post("/v1/tasks", json={"type": "echo"}).json()["id"]
        start(secured_runtime.store, UUID(task_id), worker="worker-7")
        with secured_server.client(TOKENS["critic"]) as critic:
            assert critic.post(f"/v1/tasks/{task_id}/cancel", json={}).status_code == 403
        by_actor = admin.get("/v1/audit/log", params={"actor": "worker-7"}).json()
        denials = admin.get("/v1/audit/log", params={"type": "AccessDenied"}).json()
        of_task = admin.get("/v1/audit/log", params={"task": task_id, "principal": "alice"}).json()
        bad = admin.get("/v1/audit/log", params={"type": "Task Started"})
    assert [(e["type"], e["principal"]) for e in by_actor["entries"]] == [("TaskStarted", "alice")]
    assert [(e["principal"], e["data"]["action"]) for e in denials["entries"]] == [
        ("cris", "tasks.cancel")
    ]
    assert [e["type"] for e in of_task["entries"]] == ["TaskEnqueued", "TaskStarted"]
    assert bad.status_code == 400


def test_the_last_verification_is_kept_and_only_an_admin_runs_one(
    secured_server: LiveServer,
) -> None:
    with secured_server.client(TOKENS["admin"]) as admin:
        admin.post("/v1/tasks", json={"type": "echo"})
        before = admin.get("/v1/audit/last-verification").json()
        with secured_server.client(TOKENS["coder"]) as coder:
            assert coder.get("/v1/audit/verify").status_code == 403
            assert coder.get("/v1/audit/last-verification").json() == before
        report = admin.get("/v1/audit/verify").json()
        after = admin.get("/v1/audit/last-verification").json()["last_verification"]
    assert before == {"last_verification": None}
    assert report["ok"] is True
    assert after["ok"] is True and after["by"] == "alice" and after["checked"] == report["checked"]
    assert after["verified_at"]


@pytest.mark.parametrize("path", ["/", "/console/app.js"])
def test_a_console_file_is_not_a_write(server: LiveServer, path: str) -> None:
    with server.client() as client:
        response = client.post(path, json={})
    assert response.status_code == 405
