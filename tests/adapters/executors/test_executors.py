"""``executors_by_name`` builds the executors with deployment-wide defaults."""

from __future__ import annotations

import pytest

from execution_ledger.adapters.executors import (
    DockerExecutor,
    HttpExecutor,
    LuaExecutor,
    NatsExecutor,
    PythonExecutor,
    ShellExecutor,
    executors_by_name,
)
from execution_ledger.domain.execution import Failure


def test_the_executors_are_built_by_adapter_name() -> None:
    executors = executors_by_name()

    assert {name: type(executor) for name, executor in executors.items()} == {
        "shell": ShellExecutor,
        "lua": LuaExecutor,
        "http": HttpExecutor,
        "python": PythonExecutor,
        "docker": DockerExecutor,
        "nats": NatsExecutor,
    }


@pytest.mark.asyncio
async def test_sandbox_settings_are_defaults_a_task_type_can_override(execution) -> None:
    executors = executors_by_name({"shell": {"max_output_bytes": 3}})
    settings = {"argv": ["echo", "hello"]}

    capped = await executors["shell"].run(execution(settings))
    overridden = await executors["shell"].run(execution({**settings, "max_output_bytes": 100}))

    assert capped.result["stdout"] == "hel"
    assert overridden.result["stdout"] == "hello\n"


@pytest.mark.asyncio
async def test_settings_that_were_never_checked_give_a_bad_settings_failure(execution) -> None:
    result = await executors_by_name()["lua"].run(execution({"script": 42}))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("BadSettings", False)
    assert result.message.startswith("script:")
