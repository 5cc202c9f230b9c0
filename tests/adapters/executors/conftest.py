"""Fixtures for the executor tests: executions to run and a look at what processes still live."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import psutil
import pytest

from execution_ledger.domain.execution import Execution
from execution_ledger.domain.timeouts import Timeouts

MakeExecution = Callable[..., Execution]


@pytest.fixture
def execution() -> MakeExecution:
    """``execution(settings, args)``: one attempt of a task of type ``test``."""

    def make(
        settings: dict[str, Any], args: dict[str, Any] | None = None, start_to_close: float = 5.0
    ) -> Execution:
        return Execution(
            task_id=uuid4(),
            attempt=1,
            type_name="test",
            args=args or {},
            settings=settings,
            timeouts=Timeouts(start_to_close=start_to_close),
        )

    return make


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def live_group_members() -> Callable[[int], list[int]]:
    """``live_group_members(pgid)``: pids of running (non-zombie) processes in a group."""

    def members(group_id: int) -> list[int]:
        found = []
        for process in psutil.process_iter():
            try:
                if os.getpgid(process.pid) == group_id and _alive(process):
                    found.append(process.pid)
            except ProcessLookupError:
                continue
        return found

    return members


@pytest.fixture
def is_alive() -> Callable[[int], bool]:
    """``is_alive(pid)``: the process exists and is not a zombie."""

    def alive(pid: int) -> bool:
        try:
            return _alive(psutil.Process(pid))
        except psutil.NoSuchProcess:
            return False

    return alive
