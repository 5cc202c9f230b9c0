"""The cancel policy over real HTTP: a role may cancel only tasks whose type matches its
``task_types`` patterns and whose adapter matches its ``adapters`` patterns (globs), the
adapter being the task's own (an ad-hoc task's included). A refusal is 403 and leaves the
task as it was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from execution_ledger.adapters.config_file import DEFAULT_REGISTRY
from execution_ledger.adapters.http.auth import token_sha256
from tests.adapters.http.live_server import LiveServer, runtime_with_file

TOKENS = {
    "admin": "policy-admin-token",
    "shell_ops": "policy-shell-token",
    "scripts": "policy-scripts-token",
    "agents": "policy-agents-token",
}
ROLES = """
[roles.shell_ops]
task_types = ["*"]
adapters = ["shell*"]

[roles.scripts]
task_types = ["*"]
adapters = ["py*", "l?a"]

[roles.agents]
task_types = ["agent.*"]
adapters = ["*"]
"""
SQUARE = {"type": "square", "args": {"n": 3}}  # lua
HELLO = {"type": "hello", "args": {"name": "ada"}}  # shell
ECHO = {"type": "echo"}  # python
AGENT_STEP = {"type": "agent.step", "args": {"agent_id": 7}}  # python
ADHOC_SHELL = {
    "type": "adhoc.hello",
    "adapter": "shell",
    "adapter_settings": {"argv": ["/bin/echo", "hello"]},
}


def config_text() -> str:
    principals = "".join(
        f'\n[[principals]]\nname = "{role}-user"\nrole = "{role}"\n'
        f'token_sha256 = "{token_sha256(token)}"\n'
        for role, token in TOKENS.items()
    )
    return DEFAULT_REGISTRY.read_text() + ROLES + principals


@pytest.fixture
def live(ledger_env: None, tmp_path: Path) -> Iterator[LiveServer]:
    with runtime_with_file(tmp_path, config_text()) as runtime, LiveServer(runtime) as server:
        yield server


def enqueue(live: LiveServer, body: dict[str, Any]) -> str:
    with live.client(TOKENS["admin"]) as admin:
        response = admin.post("/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def cancel(live: LiveServer, role: str, task_id: str) -> httpx.Response:
    with live.client(TOKENS[role]) as client:
        return client.post(f"/v1/tasks/{task_id}/cancel", json={"reason": "policy test"})


def state_of(live: LiveServer, task_id: str) -> str:
    with live.client(TOKENS["admin"]) as admin:
        return str(admin.get(f"/v1/tasks/{task_id}").json()["state"])


def assert_refused(live: LiveServer, role: str, task_id: str) -> None:
    before = state_of(live, task_id)
    response = cancel(live, role, task_id)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"
    assert state_of(live, task_id) == before != "cancelled"


def assert_cancelled(live: LiveServer, role: str, task_id: str) -> None:
    response = cancel(live, role, task_id)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"
    assert state_of(live, task_id) == "cancelled"


def test_a_role_limited_to_shell_adapters_cannot_cancel_a_lua_task_but_can_a_shell_one(
    live: LiveServer,
) -> None:
    lua_task, shell_task = enqueue(live, SQUARE), enqueue(live, HELLO)

    assert_refused(live, "shell_ops", lua_task)
    assert_cancelled(live, "shell_ops", shell_task)


def test_adapter_patterns_are_globs_matched_against_the_whole_adapter_name(
    live: LiveServer,
) -> None:
    python_task, lua_task, shell_task = (enqueue(live, b) for b in (ECHO, SQUARE, HELLO))

    assert_refused(live, "scripts", shell_task)  # neither "py*" nor "l?a"
    assert_cancelled(live, "scripts", python_task)  # "py*"
    assert_cancelled(live, "scripts", lua_task)  # "l?a"


def test_the_adapter_checked_is_the_tasks_own_for_an_adhoc_task(live: LiveServer) -> None:
    first, second = enqueue(live, ADHOC_SHELL), enqueue(live, ADHOC_SHELL)

    assert_refused(live, "scripts", first)  # its type is unknown; its adapter is shell
    assert_cancelled(live, "shell_ops", second)


def test_task_type_patterns_limit_cancel_whatever_the_adapter(live: LiveServer) -> None:
    agent_task, echo_task = enqueue(live, AGENT_STEP), enqueue(live, ECHO)  # both python

    assert_refused(live, "agents", echo_task)
    assert_cancelled(live, "agents", agent_task)


def test_each_refused_cancel_is_recorded_as_a_denial_naming_the_role(live: LiveServer) -> None:
    lua_task = enqueue(live, SQUARE)
    assert_refused(live, "shell_ops", lua_task)

    with live.client(TOKENS["admin"]) as admin:
        (denial,) = admin.get("/v1/events", params={"type": "AccessDenied"}).json()["events"]
    assert denial["principal"] == "shell_ops-user"
    assert denial["data"]["action"] == "tasks.cancel"
    assert "role 'shell_ops' may not cancel" in denial["data"]["reason"]
