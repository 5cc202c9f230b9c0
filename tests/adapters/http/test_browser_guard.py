"""What a web page the user happens to open can make the server do, over real HTTP: bodies
must be labelled JSON (415), the Host must name the server (421, DNS rebinding), a foreign
Origin may not change anything (403, recorded), CORS only for configured origins; ad-hoc
tasks need principals or an explicit switch; refused adapter settings are recorded."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from execution_ledger.adapters.config_file import ConfigFileError, parse_config
from execution_ledger.adapters.http.limits import HttpLimits
from execution_ledger.adapters.runtime import Runtime
from tests.adapters.http.live_server import TOKENS, LiveServer

EVIL = "http://evil.example"


def shell_attack(proof: Path) -> dict[str, Any]:
    """The issue's payload: an ad-hoc shell task that runs anything."""
    return {
        "type": "x",
        "adapter": "shell",
        "adapter_settings": {"argv": ["/bin/sh", "-c", f"id > {proof}"]},
        "args": {},
    }


def events_of(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/v1/events")
    assert response.status_code == 200
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def test_the_cross_origin_text_plain_rebinding_attack_is_refused_and_stores_nothing(
    server: LiveServer, tmp_path: Path
) -> None:
    attack = httpx.Request(
        "POST",
        f"{server.url}/v1/tasks",
        headers={"Content-Type": "text/plain", "Origin": EVIL, "Host": "evil.example"},
        content=json.dumps(shell_attack(tmp_path / "proof")).encode(),
    )
    with server.client() as client:
        response = client.send(attack)
        assert response.status_code == 421
        assert response.json()["error"]["code"] == "misdirected_request"
        assert "allowed_hosts" in response.json()["error"]["message"]
        assert events_of(client) == []


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_body_not_labelled_json_is_415_on_every_route_that_reads_one(
    server: LiveServer, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    with server.client() as client:
        task_id = client.post("/v1/tasks", json={"type": "echo"}).json()["id"]
        for path, body in (
            ("/v1/tasks", b'{"type": "echo"}'),
            ("/v1/graphs", b'{"tasks": [{"ref": "a", "type": "echo"}]}'),
            (f"/v1/tasks/{task_id}/cancel", b'{"reason": "from a form"}'),
        ):
            response = client.post(path, content=body, headers=headers)
            assert response.status_code == 415, path
            assert response.json()["error"]["code"] == "unsupported_media_type"
            assert "application/json" in response.json()["error"]["message"]
        assert [e["type"] for e in events_of(client)] == ["TaskEnqueued"]


def test_a_json_body_may_name_its_utf8_charset_and_no_other(server: LiveServer) -> None:
    body = b'{"type": "echo"}'
    with server.client() as client:
        utf8 = {"Content-Type": "application/json; charset=utf-8"}
        assert client.post("/v1/tasks", content=body, headers=utf8).status_code == 201
        latin1 = {"Content-Type": "application/json; charset=latin-1"}
        refused = client.post("/v1/tasks", content=body, headers=latin1)
        assert refused.status_code == 415
        assert "UTF-8" in refused.json()["error"]["message"]
        assert len(events_of(client)) == 1


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "localhost:1", "", "a b"])
def test_a_host_header_that_does_not_name_the_server_is_421(
    server: LiveServer, host: str
) -> None:
    with server.client() as client:
        headers = {"Host": host.format(port=server.port)}
        for response in (
            client.get("/v1/tasks", headers=headers),
            client.post("/v1/tasks", json={"type": "echo"}, headers=headers),
        ):
            assert response.status_code == 421
            assert response.json()["error"]["code"] == "misdirected_request"
        assert events_of(client) == []


def test_a_request_without_a_host_header_is_421(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(b"GET /v1/tasks HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 421 ")
    assert b"no Host header" in answer


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST.:{port}"])
def test_the_loopback_names_with_the_bound_port_are_answered(
    server: LiveServer, host: str
) -> None:
    with server.client() as client:
        headers = {"Host": host.format(port=server.port)}
        assert client.post("/v1/tasks", json={"type": "echo"}, headers=headers).status_code == 201


def test_a_name_of_allowed_hosts_is_answered(runtime: Runtime) -> None:
    limits = HttpLimits(allowed_hosts=("ledger.example.com", "api.example.com:443"))
    with LiveServer(runtime, limits=limits) as live, live.client() as client:
        assert client.get("/v1/tasks", headers={"Host": "ledger.example.com"}).status_code == 200
        port_any = {"Host": "ledger.example.com:8443"}
        assert client.get("/v1/tasks", headers=port_any).status_code == 200
        assert client.get("/v1/tasks", headers={"Host": "api.example.com:443"}).status_code == 200
        assert client.get("/v1/tasks", headers={"Host": "api.example.com:80"}).status_code == 421
        assert client.get("/v1/tasks", headers={"Host": "example.com"}).status_code == 421


@pytest.mark.parametrize("origin", [EVIL, "null", "http://127.0.0.1:1", "https://evil.example"])
def test_a_state_changing_request_from_a_foreign_origin_is_403_and_recorded(
    server: LiveServer, origin: str
) -> None:
    with server.client() as client:
        refused = client.post("/v1/tasks", json={"type": "echo"}, headers={"Origin": origin})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "cross_origin_refused"
        assert "access-control-allow-origin" not in refused.headers
        paused = client.post("/v1/queues/default/pause", headers={"Origin": origin})
        assert paused.status_code == 403
        (first, second) = events_of(client)
    assert (first["type"], first["principal"]) == ("AccessDenied", "local")
    assert first["data"]["action"] == "tasks.enqueue"
    assert origin in first["data"]["reason"]
    assert second["data"]["action"] == "queues.pause"


def test_reads_from_a_foreign_origin_get_no_cors_headers(server: LiveServer) -> None:
    with server.client() as client:
        response = client.get("/v1/tasks", headers={"Origin": EVIL})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers
        preflight = client.options(
            "/v1/tasks", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 405
        assert "access-control-allow-origin" not in preflight.headers


def test_the_servers_own_origin_may_change_state(server: LiveServer) -> None:
    with server.client() as client:
        own = {"Origin": server.url}
        assert client.post("/v1/tasks", json={"type": "echo"}, headers=own).status_code == 201
        same_name = {"Origin": f"http://localhost:{server.port}", "Host": f"localhost:{server.port}"}
        created = client.post("/v1/tasks", json={"type": "echo"}, headers=same_name)
        assert created.status_code == 201
        assert "access-control-allow-origin" not in created.headers


def test_configured_origins_get_preflight_answers_and_cors_headers(runtime: Runtime) -> None:
    app = "https://app.example.com"
    limits = HttpLimits(allowed_origins=(app,))
    with LiveServer(runtime, limits=limits) as live, live.client() as client:
        preflight = client.options(
            "/v1/tasks",
            headers={
                "Origin": app,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, authorization",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == app
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        created = client.post("/v1/tasks", json={"type": "echo"}, headers={"Origin": app})
        assert created.status_code == 201
        assert created.headers["access-control-allow-origin"] == app
        assert "Origin" in created.headers["vary"]
        other = client.post("/v1/tasks", json={"type": "echo"}, headers={"Origin": EVIL})
        assert other.status_code == 403
        assert "access-control-allow-origin" not in other.headers


def test_without_principals_an_adhoc_task_is_403_naming_the_setting_and_recorded(
    server: LiveServer, tmp_path: Path
) -> None:
    with server.client() as client:
        refused = client.post("/v1/tasks", json=shell_attack(tmp_path / "proof"))
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        assert "allow_adhoc_without_principals = true" in refused.json()["error"]["message"]
        (denied,) = events_of(client)
    assert (denied["type"], denied["principal"]) == ("AccessDenied", "local")
    assert denied["data"]["action"] == "tasks.enqueue"
    assert "no principals are configured" in denied["data"]["reason"]


def test_allow_adhoc_without_principals_accepts_them(runtime: Runtime, tmp_path: Path) -> None:
    limits = HttpLimits(allow_adhoc_without_principals=True)
    with LiveServer(runtime, limits=limits) as live, live.client() as client:
        created = client.post("/v1/tasks", json=shell_attack(tmp_path / "proof"))
        assert created.status_code == 201
        assert created.json()["adapter"] == "shell"


def test_with_principals_an_admin_may_still_enqueue_adhoc_tasks(
    secured_server: LiveServer,
) -> None:
    body = {"type": "x", "adapter": "shell", "adapter_settings": {"argv": ["/bin/true"]}}
    with secured_server.client(TOKENS["admin"]) as admin:
        assert admin.post("/v1/tasks", json=body).status_code == 201


@pytest.mark.parametrize(
    ("adapter", "settings", "named"),
    [
        ("http", {"url": "http://169.254.169.254/latest/meta-data"}, "allowed_hosts"),
        ("shell", {"argv": "rm -rf /"}, "argv"),
    ],
)
def test_a_refused_adapter_setting_at_enqueue_is_422_and_recorded_as_a_denial(
    secured_server: LiveServer, adapter: str, settings: dict[str, Any], named: str
) -> None:
    body = {"type": "x", "adapter": adapter, "adapter_settings": settings}
    with secured_server.client(TOKENS["admin"]) as admin:
        refused = admin.post("/v1/tasks", json=body)
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "adapter_settings_refused"
        (denied,) = events_of(admin)
    assert (denied["type"], denied["principal"]) == ("AccessDenied", "alice")
    assert denied["data"]["action"] == "tasks.enqueue"
    assert f"adapter_settings.{named}" in denied["data"]["reason"]


def test_a_role_refused_at_enqueue_is_recorded_as_a_denial(secured_server: LiveServer) -> None:
    body = {"type": "x", "adapter": "shell", "adapter_settings": {"argv": ["/bin/true"]}}
    with secured_server.client(TOKENS["coder"]) as coder:
        assert coder.post("/v1/tasks", json=body).status_code == 403
        (denied,) = events_of(coder)
    assert (denied["type"], denied["principal"]) == ("AccessDenied", "carol")
    assert "may not enqueue ad-hoc tasks" in denied["data"]["reason"]


def test_the_browser_rules_are_read_from_the_http_table() -> None:
    text = """
[http]
allowed_hosts = ["ledger.example.com", "ledger.example.com:8443"]
allowed_origins = ["https://app.example.com"]
allow_adhoc_without_principals = true
"""
    limits = HttpLimits(**parse_config(text, "ledger.toml").http_limits)
    assert limits.allowed_hosts == ("ledger.example.com", "ledger.example.com:8443")
    assert limits.allowed_origins == ("https://app.example.com",)
    assert limits.allow_adhoc_without_principals is True


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('allowed_hosts = "ledger.example.com"', "expected a list of strings"),
        ('allowed_hosts = ["https://ledger.example.com/"]', "is not a host name"),
        ('allowed_origins = ["ftp://app.example.com"]', "is not an origin"),
        ('allowed_origins = ["https://app.example.com/path"]', "is not an origin"),
        ('allow_adhoc_without_principals = "yes"', "expected true or false"),
    ],
)
def test_a_bad_browser_rule_is_refused_with_file_and_line(line: str, reason: str) -> None:
    text = f"[queues.default]\n\n[http]\nmax_waiting = 10\n{line}\n"
    with pytest.raises(ConfigFileError) as refused:
        parse_config(text, "ledger.toml")
    assert refused.value.line == 5
    assert reason in refused.value.reason
    assert str(refused.value).startswith("ledger.toml:5:")
