"""Fixtures of the console's browser tests: the module's Chromium and a seeded ledger; and,
when one of them fails, what the browser showed (a screenshot and the page's console log in
``test-artifacts/console/failed-<test>.*``), so that a failure seen once can be looked at."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.adapters.http.console.browser import ARTIFACTS, chromium

__all__ = ["chromium"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    driver = getattr(item, "funcargs", {}).get("chromium")
    if report.when == "call" and report.failed and driver is not None:
        keep_failure(driver, item.name)


def keep_failure(driver: Any, test_name: str) -> None:
    """The browser's screen and console log as the failed test left them (best effort: a
    browser that is gone leaves nothing, and the test's own failure is what is reported)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = ARTIFACTS / f"failed-{test_name}"
    try:
        driver.save_screenshot(str(stem.with_suffix(".png")))
        lines = [f"{e['level']} {e['message']}" for e in driver.get_log("browser")]
        stem.with_suffix(".log").write_text("\n".join([driver.current_url, *lines]) + "\n")
    except Exception:  # never mask the test's own failure
        pass
