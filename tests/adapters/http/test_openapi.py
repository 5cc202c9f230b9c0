"""The OpenAPI document matches the server: the same operations as the routes, and a
schemathesis run against the live server finds no 500 and no response off its schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from execution_ledger.adapters.http.app import build_app
from execution_ledger.adapters.http.limits import HttpLimits
from execution_ledger.adapters.runtime import Runtime
from tests.adapters.http.live_server import TOKENS, LiveServer
from tests.helpers import fail, succeed

SCHEMATHESIS_CHECKS = "all"
# Valid-looking data the API rightly refuses (unknown task types, args against a type's
# schema) is not a defect, so this one check is left out.
SCHEMATHESIS_EXCLUDED = "positive_data_acceptance"


def operations_of_routes(runtime: Runtime) -> set[tuple[str, str, str]]:
    app = build_app(runtime)
    found = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        assert route.resource is not None
        found.add((route.method.lower(), route.resource.canonical, route.name))
    return found


def test_the_document_lists_exactly_the_servers_operations(
    server: LiveServer, runtime: Runtime
) -> None:
    with server.client() as client:
        document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    documented = {
        (method, path, operation["operationId"])
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert documented == operations_of_routes(runtime)


def test_the_document_offers_examples_from_the_registry(server: LiveServer) -> None:
    with server.client() as client:
        document = client.get("/openapi.json").json()
    enqueue = document["paths"]["/v1/tasks"]["post"]
    examples = enqueue["requestBody"]["content"]["application/json"]["examples"]
    assert {"echo", "sleep", "fail"} <= set(examples)
    assert enqueue["responses"]["201"]["links"]["GetTask"]["operationId"] == "tasks.get"


def seed_ledger(runtime: Runtime, client: httpx.Client) -> None:
    """Tasks in several states, a DAG and a paused queue, so reads return real rows."""
    ids = [
        client.post("/v1/tasks", json={"type": "echo", "tags": ["x"]}).json()["id"]
        for _ in range(3)
    ]
    succeed(runtime.store, UUID(ids[0]), {"echo": [1, "two", None]})
    fail(runtime.store, UUID(ids[1]))
    client.post(f"/v1/tasks/{ids[2]}/cancel", json={"reason": "seed"})
    client.post(
        "/v1/graphs",
        json={
            "tasks": [
                {"ref": "a", "type": "echo"},
                {"ref": "b", "type": "echo", "depends_on": ["a"]},
            ]
        },
    )
    client.post("/v1/queues/agents/pause")
    runtime.catch_up()


def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(
    secured_runtime: Runtime, tmp_path: Path
) -> None:
    pytest.importorskip("schemathesis", reason="schemathesis is a test dependency of the API")

    # No worker: fuzzed ad-hoc tasks are stored, never run. Waits are kept short.
    with LiveServer(secured_runtime, limits=HttpLimits(max_wait_seconds=0.2)) as live:
        with live.client(TOKENS["admin"]) as admin:
            seed_ledger(secured_runtime, admin)
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{live.url}/openapi.json",
                "--checks",
                SCHEMATHESIS_CHECKS,
                "--exclude-checks",
                SCHEMATHESIS_EXCLUDED,
                "--header",
                f"Authorization: Bearer {TOKENS['admin']}",
                "--exclude-path",
                "/v1/events/stream",  # endless by design; tested in test_events_api
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-examples",
                "10",
                "--seed",
                "20260101",
                "--request-timeout",
                "10",
                "--workers",
                "1",  # with 2, hypothesis' lambda reflection raced inside schemathesis
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "NO_COLOR": "1"},
            timeout=120,
        )
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
