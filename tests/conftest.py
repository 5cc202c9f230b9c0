"""Fixtures that start real services: PostgreSQL (the running one named by
LEDGER_DATABASE_URL, else the embedded one) and a fresh schema per test."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql

from execution_ledger.adapters.postgres.embedded import start_embedded_postgres
from execution_ledger.adapters.runtime import Runtime, open_runtime

warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")


@pytest.fixture(scope="session")
def database_url() -> str:
    return os.environ.get("LEDGER_DATABASE_URL") or start_embedded_postgres()


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    name = f"test_{uuid4().hex[:16]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def ledger_env(database_url: str, schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_SCHEMA", schema)
    monkeypatch.delenv("LEDGER_CONFIG", raising=False)


@pytest.fixture
def runtime(ledger_env: None) -> Iterator[Runtime]:
    rt = open_runtime(pool_size=2)
    yield rt
    rt.close()


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ledger.toml"
    path.write_text(text)
    return path


DOCKER_SKIP = "no Docker engine"  # how the docker executor's tests name their skip
CHROMIUM_SKIP = "no headless Chromium"  # how the console's browser tests name theirs


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line at the end of the run when container tests were skipped for want of an
    engine (they skip one by one, easy to miss among the other skips); one more for the
    console's browser tests skipped for want of Chromium."""
    reasons = _skips(terminalreporter, DOCKER_SKIP)
    if reasons:
        why = reasons[0].split(f"{DOCKER_SKIP}: ", 1)[-1]
        tests = "test" if len(reasons) == 1 else "tests"
        terminalreporter.write_line(
            f"docker: {len(reasons)} {tests} skipped, {DOCKER_SKIP} ({why}); run .ci/start-docker"
        )
    reasons = _skips(terminalreporter, CHROMIUM_SKIP)
    if reasons:
        why = reasons[0].split(f"{CHROMIUM_SKIP}: ", 1)[-1]
        tests = "test" if len(reasons) == 1 else "tests"
        terminalreporter.write_line(f"browser: {len(reasons)} {tests} skipped, {CHROMIUM_SKIP} ({why})")


def _skips(terminalreporter: pytest.TerminalReporter, marker: str) -> list[str]:
    return [
        str(report.longrepr[2])
        for report in terminalreporter.stats.get("skipped", [])
        if isinstance(report.longrepr, tuple) and marker in str(report.longrepr[2])
    ]
