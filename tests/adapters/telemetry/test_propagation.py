"""The attempt's trace context as the executors pass it on: a shell command's environment
(``TRACEPARENT``, ``TRACESTATE``; a type's own ``env`` wins) and a python callable's
``context.trace``; none of it when the attempt has no context."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from execution_ledger.adapters.executors.python import PythonExecutor
from execution_ledger.adapters.executors.shell import ShellExecutor
from execution_ledger.domain.execution import Execution, Success
from execution_ledger.domain.timeouts import Timeouts

pytestmark = pytest.mark.asyncio
TRACE = {
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "tracestate": "vendor=7",
}


def seen_trace(args: dict[str, Any], context: Any) -> dict[str, str]:
    """A task's callable that answers with the trace context it was given."""
    return dict(context.trace)


def execution(settings: dict[str, Any], trace: dict[str, str] | None) -> Execution:
    return Execution(
        task_id=uuid4(),
        attempt=1,
        type_name="test",
        args={},
        settings=settings,
        timeouts=Timeouts(start_to_close=5.0),
        trace=trace,
    )


def environment_of(result: Any) -> dict[str, str]:
    assert isinstance(result, Success), result
    return dict(line.split("=", 1) for line in result.result["stdout"].splitlines())


async def test_a_shell_command_gets_the_context_in_its_environment_unless_its_type_sets_it() -> (
    None
):
    shell = ShellExecutor()
    traced = environment_of(await shell.run(execution({"argv": ["env"]}, TRACE)))
    plain = environment_of(await shell.run(execution({"argv": ["env"]}, None)))
    own = environment_of(
        await shell.run(execution({"argv": ["env"], "env": {"TRACEPARENT": "mine"}}, TRACE))
    )
    assert (traced["TRACEPARENT"], traced["TRACESTATE"]) == (TRACE["traceparent"], "vendor=7")
    assert "TRACEPARENT" not in plain and "TRACESTATE" not in plain
    assert (own["TRACEPARENT"], own["TRACESTATE"]) == ("mine", "vendor=7")


async def test_a_python_callable_sees_the_context_in_its_task_context() -> None:
    settings = {"callable": f"{__name__}:seen_trace"}
    traced = await PythonExecutor().run(execution(settings, TRACE))
    plain = await PythonExecutor().run(execution(settings, None))
    assert isinstance(traced, Success) and traced.result == TRACE
    assert isinstance(plain, Success) and plain.result == {}
