"""The console's Simulate page in headless Chromium, over a live server on a log made by a
real worker node (``test_simulations_api``'s module fixture): an admin pastes a registry,
runs it and reads the report (the same digest as the API's); a broken registry and a bad
time are shown as the server refused them; a role other than admin is offered no page."""

from __future__ import annotations

from typing import Any

from tests.adapters.http.console.browser import Page
from tests.adapters.http.console.test_console_pages import sign_in
from tests.adapters.http.live_server import LiveServer
from tests.adapters.http.test_simulations_api import (  # noqa: F401 (module-scoped fixtures)
    ADMIN,
    CONFIG,
    VIEWER,
    WIDER,
    ledger_module_env,
    live,
)

REFUSALS = ("400 (Bad Request)", "422 (Unprocessable")


def sign_in_as(page: Page, token: str, who: str) -> None:
    """Signed out first: the tests share one server (origin), so the tab keeps its token."""
    page.open("")
    page.wait_for(lambda _: page.all("#token, #sign-out"))
    for button in page.all("#sign-out"):
        button.click()
    sign_in(page, token)
    page.wait_for(lambda d: who in d.find_element("id", "who").text)


def run(page: Page, toml: str, **fields: str) -> None:
    page.open("simulate")
    area = page.css("#sim-toml")
    area.clear()
    area.send_keys(toml)
    for name, value in fields.items():
        box = page.css(f"#sim-{name}")
        box.clear()
        box.send_keys(value)
    page.css("#sim-run").click()


def test_an_admin_runs_a_registry_and_reads_the_report(
    chromium: Any,
    live: LiveServer,  # noqa: F811
) -> None:
    page = Page(chromium, live.url)
    sign_in_as(page, ADMIN, "alice · admin")
    page.css('#nav a[href="#/simulate"]').click()
    run(page, WIDER, workers="2", seed="3")
    page.wait_text("#sim-status", "Simulated 14 tasks")
    digest = page.css("#sim-digest").text
    outcomes = page.css("#sim-outcomes").text
    by_queue = page.css("#sim-waits-queue").text
    by_type = page.css("#sim-waits-type").text
    lanes = page.css("#sim-report").text
    bars = page.all("#sim-depth svg rect")
    learned = page.css("#sim-learned").text
    fidelity = page.css("#sim-fidelity").text
    page.screenshot("simulate")
    with live.client(ADMIN) as client:
        api = client.post("/v1/simulations", json={"toml": WIDER, "workers": 2, "seed": 3}).json()
    assert digest == api["digest"]  # the same inputs, the same report
    assert "succeeded 12 12" in outcomes and "failed 2 2" in outcomes
    assert "retries 2 2" in outcomes
    assert "narrow" in by_queue and "default" in by_queue
    assert {"nap", "laned", "fail"} <= set(by_type.split())
    assert "agent:1" in lanes
    assert bars, "the queue-depth chart has bars"
    assert "nap" in learned
    assert "start order Spearman" in fidelity
    assert page.errors() == []


def test_a_broken_registry_and_a_bad_time_are_shown_as_refused(
    chromium: Any,
    live: LiveServer,  # noqa: F811
) -> None:
    page = Page(chromium, live.url)
    sign_in_as(page, ADMIN, "alice · admin")
    run(page, CONFIG.replace("concurrency = 2", "concurrency = -2"))
    page.wait_text("#sim-status", "Refused (422): request body:3: expected an integer >= 1")
    run(page, CONFIG, since="last tuesday")
    page.wait_text("#sim-status", "Refused (400): since: give an ISO 8601 time")
    assert page.all("#sim-digest") == []
    assert page.errors(ignore=REFUSALS) == []


def test_a_role_other_than_admin_is_offered_no_simulation(
    chromium: Any,
    live: LiveServer,  # noqa: F811
) -> None:
    page = Page(chromium, live.url)
    sign_in_as(page, VIEWER, "vera · viewer")
    assert page.all('#nav a[href="#/simulate"]') == []
    assert page.all('#nav a[href="#/dataset"]') != []
    page.open("simulate")
    page.wait_text("main", "Admins only")
    assert page.all("#sim-form") == []
    assert page.errors() == []
