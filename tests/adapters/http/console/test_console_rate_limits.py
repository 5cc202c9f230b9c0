"""The console's task page says why a ready task does not start when a rate limit holds it
back, in headless Chromium against the API and a worker node on a real database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execution_ledger.adapters.config_file import DEFAULT_REGISTRY
from execution_ledger.adapters.runtime import open_runtime
from tests.adapters.http.console.browser import Page
from tests.adapters.http.live_server import LiveServer

LIMIT = """
[rate_limits.echo_hourly]
task_type = "echo"
limit = 1
period = "1h"
"""


@pytest.fixture
def live(ledger_env: None, tmp_path: Path) -> Iterator[LiveServer]:
    config = tmp_path / "ledger.toml"
    config.write_text(DEFAULT_REGISTRY.read_text() + LIMIT)
    runtime = open_runtime(config, pool_size=4)
    try:
        with LiveServer(runtime, worker=True) as server:
            yield server
    finally:
        runtime.close()


def test_a_task_held_by_a_rate_limit_shows_the_reason(chromium: Any, live: LiveServer) -> None:
    page = Page(chromium, live.url)
    with live.client() as client:
        ids = [client.post("/v1/tasks", json={"type": "echo"}).json()["id"] for _ in range(2)]
        held = page.wait_for(
            lambda _: next(
                (
                    task
                    for task in (client.get(f"/v1/tasks/{i}").json() for i in ids)
                    if task["held_by"]
                ),
                None,
            )
        )
        ran = next(i for i in ids if i != held["id"])
        page.open(f"task/{held['id']}")
        reason = page.css("#held-by").text
        page.open(f"task/{ran}")
        page.css(".title-row .state-succeeded")
        shown_for_the_one_that_ran = page.all("#held-by")
    assert held["state"] == "ready"
    assert reason.startswith("rate limit echo_hourly: 1 per 1h, next slot at ")
    assert shown_for_the_one_that_ran == []
    assert page.errors() == []
