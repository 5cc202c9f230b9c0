"""The web console in headless Chromium against a running ``ledger serve`` (the API and a
worker node on a real database): every page shows what it should, without an error in the
browser's console; live updates, cancel, the DAG's colours and the role's offers, as a
person would see them. Screenshots of each page go to ``test-artifacts/console/``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from execution_ledger.adapters.config_file import DEFAULT_REGISTRY
from execution_ledger.adapters.http.limits import HttpLimits
from execution_ledger.adapters.runtime import Runtime, open_runtime
from tests.adapters.http.console.browser import Page
from tests.adapters.http.live_server import TOKENS, LiveServer, secured_config

SCHEDULE = """
[schedules.nightly-report]
cron = "0 3 * * *"
timezone = "Europe/Paris"
task_type = "echo"
args = { report = "nightly" }
"""
TERMINAL = {"succeeded", "failed", "cancelled", "skipped"}


@pytest.fixture
def live(ledger_env: None, tmp_path: Path) -> Iterator[LiveServer]:
    """The API and a worker node, over a registry with a cron schedule."""
    config = tmp_path / "ledger.toml"
    config.write_text(DEFAULT_REGISTRY.read_text() + SCHEDULE)
    runtime = open_runtime(config, pool_size=4)
    try:
        with LiveServer(runtime, worker=True) as server:
            yield server
    finally:
        runtime.close()


def wait_state(client: httpx.Client, page: Page, task_id: str, states: set[str]) -> dict[str, Any]:
    return page.wait_for(
        lambda _: (t := client.get(f"/v1/tasks/{task_id}").json())["state"] in states and t
    )


def failing_graph(client: httpx.Client) -> dict[str, str]:
    body = {
        "tasks": [
            {"ref": "fetch", "type": "echo", "args": {"url": "https://example.org/a"}},
            {"ref": "parse", "type": "fail", "args": {"message": "bad input"}, "depends_on": ["fetch"]},
            {"ref": "index", "type": "echo", "depends_on": ["parse"]},
            {"ref": "report", "type": "echo", "depends_on": ["index", "fetch"]},
        ]
    }
    response = client.post("/v1/graphs", json=body)
    assert response.status_code == 201, response.text
    return response.json()["tasks"]


def test_every_page_renders_what_it_shows_without_a_console_error(
    chromium: Any, live: LiveServer
) -> None:
    page = Page(chromium, live.url)
    with live.client() as client:
        refs = failing_graph(client)
        wait_state(client, page, refs["report"], {"skipped"})
        client.post("/v1/tasks", json={"type": "echo", "args": {"note": "hello"}, "tags": ["demo"]})
        shell = client.post("/v1/tasks", json={"type": "hello", "args": {"name": "console"}}).json()
        wait_state(client, page, shell["id"], {"succeeded"})
        client.get("/v1/audit/verify")

    page.open("")
    page.css("#last-verification .state-succeeded")
    page.wait_for(lambda _: "default" in page.text() and "Worker nodes" in page.text())
    assert page.all("svg.chart rect.bar-succeeded") and page.all("svg.chart rect.bar-failed")
    assert page.css('tr[data-queue="default"]').text.startswith("default")
    page.screenshot("overview")

    page.open("tasks")
    page.wait_for(lambda _: len(page.all("#task-rows tr[data-task]")) == 6)
    page.css('#live[data-live="on"]')
    page.screenshot("tasks")

    page.open(f"task/{refs['parse']}")
    page.css("svg.dag")
    page.css("svg.timeline")
    page.wait_for(lambda _: "TaskFailed" in page.text())
    page.screenshot("task")

    page.open(f"task/{shell['id']}")
    page.wait_text(".output pre", "hello console")  # the shell task's stdout
    assert "attempt 1 · stdout" in page.css(".output h3").text

    page.open("types/fail")
    assert "Suggested start_to_close" in page.css("#type-detail").text
    page.screenshot("task-types")

    page.open("schedules")
    row = page.css('tr[data-schedule="nightly-report"]')
    assert "0 3 * * *" in row.text and "Europe/Paris" in row.text
    assert "file" in row.text and "allow" in row.text  # source, overlap policy
    page.screenshot("schedules")
    page.css('tr[data-schedule="nightly-report"] button').click()
    page.wait_text('tr[data-schedule="nightly-report"]', "paused")
    with live.client() as client:
        assert client.get("/v1/schedules").json()["schedules"][0]["paused"] is True

    page.open("audit")
    page.wait_for(lambda _: len(page.all('#audit-rows tr[data-event="TaskSkipped"]')) == 2)
    page.screenshot("audit")

    page.open("dataset")
    page.css("#dataset-form")
    page.screenshot("dataset")
    assert page.errors() == []


def test_a_task_submitted_over_the_api_appears_live_in_the_list(
    chromium: Any, live: LiveServer
) -> None:
    page = Page(chromium, live.url)
    page.open("tasks")
    page.css('#live[data-live="on"]')
    assert page.all("#task-rows tr[data-task]") == []
    with live.client() as client:
        task_id = client.post("/v1/tasks", json={"type": "echo", "args": {"n": 1}}).json()["id"]
    row = page.css(f'#task-rows tr[data-task="{task_id}"]')
    assert "echo" in row.text
    page.css(f'#task-rows tr[data-task="{task_id}"][data-state="succeeded"]')
    assert page.errors() == []


def test_cancel_from_the_console_ends_a_running_task(chromium: Any, live: LiveServer) -> None:
    page = Page(chromium, live.url)
    with live.client() as client:
        task_id = client.post("/v1/tasks", json={"type": "sleep", "args": {"seconds": 120}}).json()["id"]
        wait_state(client, page, task_id, {"running"})
        page.open(f"task/{task_id}")
        page.css(".title-row .state-running")
        page.css("#cancel-task").click()
        page.css(".title-row .state-cancelled")
        assert page.all("#cancel-task") == []
        task = wait_state(client, page, task_id, TERMINAL)
        history = client.get(f"/v1/tasks/{task_id}/history").json()["events"]
    assert task["state"] == "cancelled"
    cancelled = [e for e in history if e["type"] == "TaskCancelled"]
    assert [(e["principal"], e["data"]["reason"]) for e in cancelled] == [
        ("local", "cancelled from the console")
    ]
    assert page.errors() == []


def test_bulk_cancel_sends_one_audited_request_per_selected_task(
    chromium: Any, live: LiveServer
) -> None:
    page = Page(chromium, live.url)
    with live.client() as client:
        client.post("/v1/queues/default/pause")
        ids = [client.post("/v1/tasks", json={"type": "echo"}).json()["id"] for _ in range(3)]
        page.open("tasks?state=ready")
        for task_id in ids[:2]:
            page.css(f'tr[data-task="{task_id}"] input.pick').click()
        page.css("#cancel-selected").click()
        for task_id in ids[:2]:
            wait_state(client, page, task_id, {"cancelled"})
        # the state filter holds: cancelled tasks leave the list of ready ones
        page.wait_for(lambda _: len(page.all("#task-rows tr[data-task]")) == 1)
        events = client.get("/v1/events", params={"type": "TaskCancelled"}).json()["events"]
        third = client.get(f"/v1/tasks/{ids[2]}").json()
    assert sorted(e["aggregate_id"] for e in events) == sorted(ids[:2])
    assert {e["principal"] for e in events} == {"local"}
    assert third["state"] == "ready"
    assert page.errors() == []


def test_a_dags_failed_node_shows_its_skipped_dependents(chromium: Any, live: LiveServer) -> None:
    page = Page(chromium, live.url)
    with live.client() as client:
        refs = failing_graph(client)
        wait_state(client, page, refs["report"], {"skipped"})
    page.open(f"task/{refs['parse']}")
    node = page.css(f'svg.dag g.node[data-task="{refs["parse"]}"]')
    assert node.get_attribute("data-state") == "failed"
    states = {
        ref: page.css(f'svg.dag g.node[data-task="{task_id}"]').get_attribute("data-state")
        for ref, task_id in refs.items()
    }
    assert states == {"fetch": "succeeded", "parse": "failed", "index": "skipped", "report": "skipped"}
    page.css(f'svg.dag g.node[data-task="{refs["report"]}"]').click()
    page.wait_for(lambda d: refs["report"] in d.current_url)
    page.css(".title-row .state-skipped")
    page.screenshot("task-skipped")
    assert page.errors() == []


def sign_in(page: Page, token: str) -> None:
    page.open("")

    def fill(_: Any) -> bool:  # again if the form was drawn anew meanwhile (stale)
        field = page.css("#token")
        field.clear()
        field.send_keys(token)
        page.css("#signin button[type=submit]").click()
        return True

    page.wait_for(fill)


@pytest.fixture
def secured_live(ledger_env: None, tmp_path: Path) -> Iterator[LiveServer]:
    """Principals alice (admin), carol (coder), cris (critic: may not cancel); a worker node
    beside the API (projections follow the log) with the default queue paused, so tasks stay
    ready."""
    runtime = open_runtime(secured_config(tmp_path), pool_size=4)
    try:
        with LiveServer(runtime, worker=True) as server:
            with server.client(TOKENS["admin"]) as admin:
                assert admin.post("/v1/queues/default/pause").status_code == 200
            yield server
    finally:
        runtime.close()


def test_a_role_that_may_not_cancel_is_offered_no_cancel(
    chromium: Any, secured_live: LiveServer
) -> None:
    page = Page(chromium, secured_live.url)
    with secured_live.client(TOKENS["admin"]) as admin:
        task_id = admin.post("/v1/tasks", json={"type": "echo"}).json()["id"]
    page.open("")
    page.css("#signin")
    page.screenshot("sign-in")
    sign_in(page, "not-a-token")
    page.wait_text("#signin .error", "unknown bearer token")

    sign_in(page, TOKENS["critic"])
    page.wait_for(lambda d: "cris · critic" in d.find_element("id", "who").text)
    assert page.all("button[data-queue]") == []  # no pause / resume
    page.open(f"task/{task_id}")
    page.css(".title-row .state-ready")
    assert page.all("#cancel-task") == []
    page.open("tasks")
    page.css(f'tr[data-task="{task_id}"]')
    assert page.all("#cancel-selected") == []
    page.open("audit")
    page.css("#audit-filters")
    assert page.all("#verify") == []

    page.css("#sign-out").click()
    sign_in(page, TOKENS["coder"])
    page.wait_for(lambda d: "carol · coder" in d.find_element("id", "who").text)
    page.open(f"task/{task_id}")
    page.css("#cancel-task")  # the role that may cancel echo tasks is offered it
    page.open("tasks")
    page.css("#cancel-selected")
    assert page.errors(ignore=("401 (Unauthorized)",)) == []


def test_an_admin_verifies_the_chain_and_sees_the_denials(
    chromium: Any, secured_live: LiveServer, database_url: str, schema: str
) -> None:
    page = Page(chromium, secured_live.url)
    with secured_live.client(TOKENS["admin"]) as admin:
        task_id = admin.post("/v1/tasks", json={"type": "echo"}).json()["id"]
    with secured_live.client(TOKENS["critic"]) as critic:
        assert critic.post(f"/v1/tasks/{task_id}/cancel", json={}).status_code == 403
    sign_in(page, TOKENS["admin"])
    page.wait_for(lambda d: "alice · admin" in d.find_element("id", "who").text)
    page.open("audit?denials=1")
    row = page.css('#audit-rows tr[data-event="AccessDenied"]')
    assert "cris" in row.text
    assert len(page.all("#audit-rows tr[data-event]")) == 1
    page.css("#verify").click()
    result = page.css("#verify-result .state-succeeded")
    assert result.text == "intact"
    assert "checked" in page.css("#verify-result").text and "by alice" in page.css("#verify-result").text
    page.screenshot("audit-verified")
    with psycopg.connect(database_url, autocommit=True) as tamper:
        tamper.execute("SET session_replication_role = replica")  # past the append-only guard
        tamper.execute(
            sql.SQL("UPDATE {} SET state = state || ' '::bytea WHERE notification_id = 1").format(
                sql.Identifier(schema, "ledger_events")
            )
        )
    page.css("#verify").click()
    page.wait_text("#verify-result .state-failed", "altered at position 1 (altered)")
    page.screenshot("audit-altered")
    page.open("dataset")
    page.css("#dataset-format option[value=csv]").click()
    page.css("#download").click()
    page.wait_for(lambda _: "Downloaded dataset.csv" in page.css("#dataset-status").text)
    assert page.errors() == []


def test_a_large_graph_is_drawn_around_the_task(chromium: Any, live: LiveServer) -> None:
    page = Page(chromium, live.url)
    width = 400  # more than the console draws at once (graph.js MAX_DRAWN = 300)
    tasks = [{"ref": "root", "type": "echo"}] + [
        {"ref": f"leaf-{n}", "type": "echo", "depends_on": ["root"]} for n in range(width)
    ]
    with live.client() as client:
        client.post("/v1/queues/default/pause")
        refs = client.post("/v1/graphs", json={"tasks": tasks}).json()["tasks"]
        page.wait_for(
            lambda _: len(client.get("/v1/graph", params={"task": refs["root"]}).json()["nodes"])
            == width + 1
        )
    page.open(f"task/{refs['leaf-7']}")
    page.wait_text("#graph-note", f"{width + 1} tasks")
    drawn = page.all("svg.dag g.node")
    assert len(drawn) == 300
    assert {refs["root"], refs["leaf-7"]} <= {node.get_attribute("data-task") for node in drawn}
    assert page.css("svg.dag g.node.focus").get_attribute("data-task") == refs["leaf-7"]
    assert page.errors() == []


def test_bulk_retry_schedules_each_selected_failed_task_again(
    chromium: Any, live: LiveServer
) -> None:
    page = Page(chromium, live.url)
    with live.client() as client:
        ids = [client.post("/v1/tasks", json={"type": "fail"}).json()["id"] for _ in range(2)]
        for task_id in ids:
            wait_state(client, page, task_id, {"failed"})
        client.post("/v1/queues/default/pause")
        page.open("tasks?state=failed")
        page.wait_for(lambda _: len(page.all("#task-rows tr[data-task]")) == 2)
        page.css("#select-all").click()
        page.css("#retry-selected").click()
        page.wait_for(lambda _: page.all("#task-rows tr[data-task]") == [])
        retries = client.get("/v1/events", params={"type": "TaskRetryScheduled"}).json()["events"]
        states = {client.get(f"/v1/tasks/{i}").json()["state"] for i in ids}
    manual = [e for e in retries if e["data"]["manual"]]
    assert sorted(e["aggregate_id"] for e in manual) == sorted(ids)
    assert {e["principal"] for e in manual} == {"local"}
    assert states <= {"scheduled", "ready"}
    assert page.errors() == []


def test_the_list_says_it_is_not_live_when_the_server_refuses_its_stream(
    chromium: Any, runtime: Runtime
) -> None:
    with LiveServer(runtime, limits=HttpLimits(max_waiting=0)) as server:
        page = Page(chromium, server.url)
        page.open("tasks")
        page.wait_text('#live[data-live="off"]', "not live: 0 calls are already waiting")
        page.css("#filters")  # the list itself still works
    assert page.errors(ignore=("429 (Too Many Requests)",)) == []
