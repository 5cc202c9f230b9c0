"""The end of a test run names the console's browser tests skipped for want of headless
Chromium, in one line (``tests/conftest.py::pytest_terminal_summary``)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

BROWSER_TESTS = """
import pytest


@pytest.fixture(scope="module")
def chromium():
    pytest.skip("no headless Chromium: chromedriver is missing (apt-get install chromium-driver); "
                ".ci/run installs them")


def test_a_page(chromium):
    pass


def test_another_page(chromium):
    pass


def test_without_a_browser():
    pass
"""


def test_skipped_browser_tests_are_counted_in_one_line_with_what_is_missing(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest("from tests.conftest import pytest_terminal_summary  # noqa: F401\n")
    pytester.makepyfile(test_pages=BROWSER_TESTS)

    result = pytester.runpytest("-o", "asyncio_default_fixture_loop_scope=function")

    result.assert_outcomes(passed=1, skipped=2)
    lines = [line for line in result.outlines if line.startswith("browser:")]
    assert lines == [
        "browser: 2 tests skipped, no headless Chromium (chromedriver is missing "
        "(apt-get install chromium-driver); .ci/run installs them)"
    ]
