"""The console's "all matching" actions in headless Chromium against a running server (the
API and a worker node with the default queue paused, so tasks stay ready): the count asked
about first, the action on every match (not only the rows shown), nothing done when the
person keeps them, a role's refusal shown, and no offer without a filter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from execution_ledger.adapters.runtime import open_runtime
from tests.adapters.http.console.browser import Page
from tests.adapters.http.live_server import TOKENS, LiveServer, secured_config


def serving(runtime_config: Path | None) -> Iterator[LiveServer]:
    runtime = open_runtime(runtime_config, pool_size=4)
    try:
        with LiveServer(runtime, worker=True) as server:
            token = TOKENS["admin"] if runtime_config is not None else None
            with server.client(token) as admin:
                assert admin.post("/v1/queues/default/pause").status_code == 200
            yield server
    finally:
        runtime.close()


@pytest.fixture
def live(ledger_env: None) -> Iterator[LiveServer]:
    yield from serving(None)


@pytest.fixture
def secured_live(ledger_env: None, tmp_path: Path) -> Iterator[LiveServer]:
    yield from serving(secured_config(tmp_path))


def enqueue(client: httpx.Client, count: int, type_name: str = "echo", tag: str = "t") -> list[str]:
    return [
        client.post("/v1/tasks", json={"type": type_name, "tags": [tag]}).json()["id"]
        for _ in range(count)
    ]


def states(client: httpx.Client, ids: list[str]) -> set[str]:
    return {client.get(f"/v1/tasks/{task_id}").json()["state"] for task_id in ids}


def bulk_requests(client: httpx.Client) -> list[dict[str, Any]]:
    return client.get("/v1/events", params={"type": "BulkActionRequested"}).json()["events"]


def listed(page: Page, count: int) -> None:
    page.wait_for(lambda _: len(page.all("#task-rows tr[data-task]")) == count)


def test_cancel_all_matching_asks_with_the_count_then_cancels_every_match(
    chromium: Any, live: LiveServer
) -> None:
    page = Page(chromium, live.url)
    with live.client() as client:
        nightly = enqueue(client, 3, tag="nightly")
        other = enqueue(client, 1, tag="other")
        page.open("tasks?tag=nightly")
        listed(page, 3)
        page.css("#cancel-matching").click()
        page.wait_text("#matching-count", "Cancel 3 matching tasks?")
        page.screenshot("tasks-cancel-all-matching")
        page.css("#confirm-matching").click()
        page.wait_for(lambda _: states(client, nightly) == {"cancelled"})
        page.wait_text(".toast", "Cancel all matching: 3 changed, 0 skipped (completed)")
        assert states(client, other) == {"ready"}
        [requested] = bulk_requests(client)
    assert requested["data"]["task_filter"] == {"tag": "nightly"}
    assert requested["principal"] == "local"
    assert page.errors() == []


def test_keeping_them_changes_nothing(chromium: Any, live: LiveServer) -> None:
    page = Page(chromium, live.url)
    with live.client() as client:
        ids = enqueue(client, 2)
        page.open("tasks?tag=t")
        listed(page, 2)
        page.css("#cancel-matching").click()
        page.wait_text("#matching-count", "Cancel 2 matching tasks?")
        page.css("#keep-matching").click()
        page.wait_for(lambda _: page.all("#matching-count") == [])
        assert states(client, ids) == {"ready"}
        assert bulk_requests(client) == []
    assert page.errors() == []


def test_no_matching_action_is_offered_without_a_filter(chromium: Any, live: LiveServer) -> None:
    page = Page(chromium, live.url)
    with live.client() as client:
        enqueue(client, 1)
    page.open("tasks")
    listed(page, 1)
    page.css("#cancel-selected")
    assert page.all("#cancel-matching") == [] and page.all("#retry-matching") == []
    assert page.errors() == []


def test_a_role_refused_for_some_matches_sees_why_and_nothing_changes(
    chromium: Any, secured_live: LiveServer
) -> None:
    page = Page(chromium, secured_live.url)
    with secured_live.client(TOKENS["admin"]) as admin:
        ids = enqueue(admin, 1, tag="mixed") + enqueue(admin, 1, "fail", tag="mixed")
    page.open("")
    field = page.css("#token")
    field.send_keys(TOKENS["coder"])  # echo, add, sleep: not fail
    page.css("#signin button[type=submit]").click()
    page.wait_for(lambda d: "carol · coder" in d.find_element("id", "who").text)
    page.open("tasks?tag=mixed")
    listed(page, 2)
    page.css("#cancel-matching").click()
    page.wait_text(".toast", "may not cancel tasks of type 'fail'")
    with secured_live.client(TOKENS["admin"]) as admin:
        assert states(admin, ids) == {"ready"}
        assert bulk_requests(admin) == []
    assert page.errors(ignore=("403 (Forbidden)",)) == []
