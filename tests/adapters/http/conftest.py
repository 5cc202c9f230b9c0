"""Fixtures: the API served over a fresh schema, with or without a worker node, with or
without principals (see ``live_server.TOKENS``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from execution_ledger.adapters.runtime import Runtime, open_runtime
from tests.adapters.http.live_server import LiveServer, secured_config


@pytest.fixture
def server(runtime: Runtime) -> Iterator[LiveServer]:
    """No principals configured: every request is the local admin."""
    with LiveServer(runtime) as live:
        yield live


@pytest.fixture
def worker_server(runtime: Runtime) -> Iterator[LiveServer]:
    """The API with a worker node beside it (tasks run, projections follow the log)."""
    with LiveServer(runtime, worker=True) as live:
        yield live


@pytest.fixture
def secured_runtime(ledger_env: None, tmp_path: Path) -> Iterator[Runtime]:
    rt = open_runtime(secured_config(tmp_path), pool_size=2)
    yield rt
    rt.close()


@pytest.fixture
def secured_server(secured_runtime: Runtime) -> Iterator[LiveServer]:
    """Principals alice (admin), carol (coder: echo, add, sleep), cris (critic: echo, may not
    cancel); see ``TOKENS``."""
    with LiveServer(secured_runtime) as live:
        yield live
