"""The end of a test run names the container tests skipped for want of a Docker engine, in
one line (``tests/conftest.py::pytest_terminal_summary``)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

CONTAINER_TESTS = """
import pytest


@pytest.fixture(scope="module")
def engine():
    pytest.skip("no Docker engine: DOCKER_HOST unset and no /var/run/docker.sock")


def test_in_a_container(engine):
    pass


def test_in_another_container(engine):
    pass


def test_skipped_for_another_reason():
    pytest.skip("not on this platform")


def test_without_a_container():
    pass
"""


@pytest.fixture
def run_with_the_hook(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest("from tests.conftest import pytest_terminal_summary  # noqa: F401\n")
    return pytester


def test_skipped_container_tests_are_counted_in_one_line_with_the_reason(
    run_with_the_hook: pytest.Pytester,
) -> None:
    run_with_the_hook.makepyfile(test_containers=CONTAINER_TESTS)

    result = run_with_the_hook.runpytest("-o", "asyncio_default_fixture_loop_scope=function")

    result.assert_outcomes(passed=1, skipped=3)
    docker_lines = [line for line in result.outlines if line.startswith("docker:")]
    assert docker_lines == [
        "docker: 2 tests skipped, no Docker engine "
        "(DOCKER_HOST unset and no /var/run/docker.sock); run .ci/start-docker"
    ]


def test_a_run_without_such_skips_prints_no_docker_line(
    run_with_the_hook: pytest.Pytester,
) -> None:
    run_with_the_hook.makepyfile(
        test_plain="import pytest\n\n\ndef test_skips():\n    pytest.skip('not today')\n"
    )

    result = run_with_the_hook.runpytest("-o", "asyncio_default_fixture_loop_scope=function")

    result.assert_outcomes(skipped=1)
    assert not [line for line in result.outlines if line.startswith("docker:")]
