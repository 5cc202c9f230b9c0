"""Executor adapters: run one execution of a task and return ``Success`` or ``Failure``.

``executors_by_name`` builds the six executors (shell, lua, http, python, docker, nats) for
the wiring.
"""

from __future__ import annotations

from typing import Any

from execution_ledger.adapters.executors.base import Executor
from execution_ledger.adapters.executors.docker import DockerExecutor
from execution_ledger.adapters.executors.http import HttpExecutor
from execution_ledger.adapters.executors.lua import LuaExecutor
from execution_ledger.adapters.executors.nats import NatsExecutor
from execution_ledger.adapters.executors.python import PythonExecutor
from execution_ledger.adapters.executors.shell import ShellExecutor

__all__ = [
    "DockerExecutor",
    "Executor",
    "HttpExecutor",
    "LuaExecutor",
    "NatsExecutor",
    "PythonExecutor",
    "ShellExecutor",
    "executors_by_name",
]


def executors_by_name(sandbox_settings: dict[str, Any] | None = None) -> dict[str, Executor[Any]]:
    """The executors by adapter name.

    ``sandbox_settings`` maps an adapter name to deployment-wide default settings, e.g.
    ``{"shell": {"memory_bytes": 512 * 2**20}, "http": {"max_response_bytes": 65536}}``;
    a task type's own settings override them key by key.
    """
    defaults = sandbox_settings or {}
    executors: list[Executor[Any]] = [
        ShellExecutor(defaults.get("shell")),
        LuaExecutor(defaults.get("lua")),
        HttpExecutor(defaults.get("http")),
        PythonExecutor(defaults.get("python")),
        DockerExecutor(defaults.get("docker")),
        NatsExecutor(defaults.get("nats")),
    ]
    return {executor.name: executor for executor in executors}
