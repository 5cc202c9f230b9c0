"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium, for
the console's tests: what is missing is named in the skip reason (``CHROMIUM_SKIP``), the
browser's console log is read back, and screenshots go to ``test-artifacts/console/``."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHROMIUM_SKIP

ARTIFACTS = Path(__file__).resolve().parents[4] / "test-artifacts" / "console"
WAIT_SECONDS = 20


def missing() -> str | None:
    """What is missing to drive a browser, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return "the chromium binary is missing (apt-get install chromium)"
    if shutil.which("chromedriver") is None:
        return "chromedriver is missing (apt-get install chromium-driver)"
    return None


def require_browser() -> None:
    reason = missing()
    if reason is not None:
        pytest.skip(f"{CHROMIUM_SKIP}: {reason}; .ci/run installs them")


def start_chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--metrics-recording-only",
        "--no-proxy-server",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    require_browser()
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The browser on one server: open a console route, wait for what a person would see,
    read the console log, save a screenshot."""

    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url
        driver.get("about:blank")
        driver.get_log("browser")  # forget what earlier tests left

    def open(self, route: str = "") -> None:
        self.driver.get(f"{self.base_url}/#/{route}")

    def wait_for(self, condition: Callable[[Any], Any], seconds: float = WAIT_SECONDS) -> Any:
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
        )
        from selenium.webdriver.support.ui import WebDriverWait

        ignored = (NoSuchElementException, StaleElementReferenceException)
        wait = WebDriverWait(self.driver, seconds, poll_frequency=0.1, ignored_exceptions=ignored)
        return wait.until(condition)

    def wait_text(self, selector: str, text: str) -> None:
        """Wait until the element at ``selector`` shows ``text`` (re-rendering allowed)."""
        self.wait_for(lambda _: text in self.css(selector).text)

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.wait_for(lambda d: d.find_element(By.CSS_SELECTOR, selector))

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def text(self) -> str:
        return self.driver.find_element("tag name", "main").text

    def errors(self, ignore: tuple[str, ...] = ()) -> list[str]:
        """SEVERE entries of the browser's console log since the last call."""
        return [
            entry["message"]
            for entry in self.driver.get_log("browser")
            if entry["level"] == "SEVERE" and not any(text in entry["message"] for text in ignore)
        ]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1400, min(max(int(height) + 140, 1000), 2600))
        try:
            self.driver.save_screenshot(str(path))
        finally:
            self.driver.set_window_size(1400, 1000)
        return path
