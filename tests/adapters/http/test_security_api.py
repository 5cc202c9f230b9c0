"""Bearer tokens, roles and their policies over real HTTP; where the server may listen."""

from __future__ import annotations

import asyncio
import logging

import pytest

from execution_ledger.adapters.http.app import is_loopback, serve_http
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import ConfigError
from tests.adapters.http.live_server import TOKENS, LiveServer

ADHOC_SHELL = {
    "type": "adhoc.hello",
    "adapter": "shell",
    "adapter_settings": {"argv": ["/bin/echo", "hello"]},
}


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", "Basic YWxpY2U6c2VjcmV0", "Bearer"]
)
def test_a_missing_or_unknown_token_is_401(
    secured_server: LiveServer, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with secured_server.client() as client:
        response = client.get("/v1/tasks", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        refused = client.post("/v1/tasks", json={"type": "echo"}, headers=headers)
        assert refused.status_code == 401
    with secured_server.client(TOKENS["admin"]) as admin:
        events = admin.get("/v1/events").json()["events"]
    # Nothing was enqueued; each refusal is in the audit trail.
    assert [e["type"] for e in events] == ["AccessDenied", "AccessDenied"]


def test_health_and_the_api_description_need_no_token(secured_server: LiveServer) -> None:
    with secured_server.client() as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/metrics").status_code == 401


def test_a_token_acts_as_its_principal_and_role(secured_server: LiveServer) -> None:
    with secured_server.client(TOKENS["coder"]) as coder:
        task = coder.post("/v1/tasks", json={"type": "add", "args": {"a": 1, "b": 2}}).json()
    assert (task["principal"], task["role"]) == ("carol", "coder")


def test_a_role_may_enqueue_only_the_task_types_its_policy_names(
    secured_server: LiveServer,
) -> None:
    with secured_server.client(TOKENS["critic"]) as critic:
        refused = critic.post("/v1/tasks", json={"type": "add", "args": {"a": 1, "b": 2}})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        graph = critic.post(
            "/v1/graphs",
            json={"tasks": [{"ref": "a", "type": "echo"}, {"ref": "b", "type": "sleep"}]},
        )
        assert graph.status_code == 403
        assert critic.post("/v1/tasks", json={"type": "echo"}).status_code == 201
        kinds = [e["type"] for e in critic.get("/v1/events").json()["events"]]
    assert kinds == ["AccessDenied", "AccessDenied", "TaskEnqueued"]


def test_only_an_admin_may_enqueue_an_adhoc_task_naming_its_adapter(
    secured_server: LiveServer,
) -> None:
    with secured_server.client(TOKENS["coder"]) as coder:
        assert coder.post("/v1/tasks", json=ADHOC_SHELL).status_code == 403
    with secured_server.client(TOKENS["admin"]) as admin:
        response = admin.post("/v1/tasks", json=ADHOC_SHELL)
        assert response.status_code == 201
        assert response.json()["adapter"] == "shell"
        bad = admin.post("/v1/tasks", json={**ADHOC_SHELL, "adapter_settings": {"argv": "x"}})
        assert bad.status_code == 422


def test_a_role_without_may_cancel_may_not_cancel(secured_server: LiveServer) -> None:
    with secured_server.client(TOKENS["critic"]) as critic:
        task_id = critic.post("/v1/tasks", json={"type": "echo"}).json()["id"]
        assert critic.post(f"/v1/tasks/{task_id}/cancel").status_code == 403
    with secured_server.client(TOKENS["coder"]) as coder:
        assert coder.post(f"/v1/tasks/{task_id}/cancel").status_code == 200


def test_a_role_may_cancel_and_retry_only_task_types_its_policy_names(
    secured_server: LiveServer,
) -> None:
    with secured_server.client(TOKENS["admin"]) as admin:
        task_id = admin.post("/v1/tasks", json={"type": "square", "args": {"n": 2}}).json()["id"]
    with secured_server.client(TOKENS["coder"]) as coder:
        assert coder.post(f"/v1/tasks/{task_id}/cancel").status_code == 403
    with secured_server.client(TOKENS["admin"]) as admin:
        assert admin.post(f"/v1/tasks/{task_id}/cancel").status_code == 200
    with secured_server.client(TOKENS["coder"]) as coder:
        assert coder.post(f"/v1/tasks/{task_id}/retry").status_code == 403
        assert coder.get(f"/v1/tasks/{task_id}").status_code == 200  # every role may read


def test_only_an_admin_may_pause_and_resume_queues(secured_server: LiveServer) -> None:
    with secured_server.client(TOKENS["coder"]) as coder:
        assert coder.post("/v1/queues/default/pause").status_code == 403
        assert coder.post("/v1/queues/no-such-queue/pause").status_code == 403
    with secured_server.client(TOKENS["admin"]) as admin:
        assert admin.post("/v1/queues/default/pause").json()["paused"] is True
        assert admin.post("/v1/queues/default/resume").json()["paused"] is False


def test_denied_requests_are_written_to_the_audit_log(
    secured_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ledger.audit"):
        with secured_server.client(TOKENS["critic"]) as critic:
            critic.post("/v1/tasks", json={"type": "add", "args": {"a": 1, "b": 2}})
        with secured_server.client() as anonymous:
            anonymous.get("/v1/workers")
    denials = [r for r in caplog.records if r.name == "ledger.audit"]
    assert [(r.__dict__["principal"], r.__dict__["action"]) for r in denials] == [
        ("cris", "tasks.enqueue"),
        ("anonymous", "workers.list"),
    ]
    assert "may not enqueue 'add'" in denials[0].__dict__["reason"]


def test_denied_requests_are_recorded_as_events_in_the_audit_trail(
    secured_server: LiveServer,
) -> None:
    with secured_server.client(TOKENS["critic"]) as critic:
        assert critic.post("/v1/queues/default/pause").status_code == 403
    with secured_server.client(TOKENS["admin"]) as admin:
        page = admin.get("/v1/events", params={"type": "AccessDenied"})
        assert page.status_code == 200
        (event,) = page.json()["events"]
    assert event["principal"] == "cris"
    assert event["data"]["action"] == "queues.pause"
    assert "may not pause" in event["data"]["reason"]


def test_without_principals_the_server_refuses_a_non_loopback_address(
    runtime: Runtime,
) -> None:
    async def serve() -> None:
        await serve_http(runtime, "0.0.0.0", 0, asyncio.Event())

    with pytest.raises(ConfigError, match="no principals are configured"):
        asyncio.run(serve())


def test_loopback_addresses_are_recognised() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.10") and not is_loopback("")


def test_with_principals_the_server_may_listen_on_every_interface(
    secured_runtime: Runtime,
) -> None:
    with (
        LiveServer(secured_runtime, host="0.0.0.0") as live,
        live.client(TOKENS["admin"]) as admin,
    ):
        assert admin.get("/v1/queues").status_code == 200
