"""The Python executor calls an importable ``module:function`` with the args dict."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from execution_ledger.adapters.executors import builtin_tasks
from execution_ledger.adapters.executors.python import PythonExecutor
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import Failure, Success

python = PythonExecutor()

# A subprocess, connection or future left behind by a cancelled run fails the test.
pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)

CALLABLES = """
import asyncio
import threading
from pathlib import Path


class QuotaExceeded(Exception):
    pass


def over_quota(args):
    raise QuotaExceeded(f"{args['user']} is over quota")


def not_json(args):
    return {"when": object()}


def thread_id(args):
    return threading.get_ident()


async def wait_forever(args):
    Path(args["marker"]).write_text("waiting")
    try:
        await asyncio.sleep(600)
    except asyncio.CancelledError:
        Path(args["marker"]).write_text("cancelled")
        raise


answer = 42
"""


@pytest.fixture
def callables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a freshly written, importable module holding the callables above."""
    name = f"ledger_test_callables_{uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(CALLABLES))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def builtin(name: str) -> dict[str, str]:
    return {"callable": f"execution_ledger.adapters.executors.builtin_tasks:{name}"}


@pytest.mark.asyncio
async def test_a_sync_function_receives_the_args_and_its_result_is_returned(execution) -> None:
    assert await python.run(execution(builtin("add"), {"a": 2, "b": 3})) == Success({"sum": 5})
    assert await python.run(execution(builtin("echo"), {"x": [1]})) == Success({"x": [1]})


@pytest.mark.asyncio
async def test_an_async_function_is_awaited(execution) -> None:
    result = await python.run(execution(builtin("sleep"), {"seconds": 0.01}))

    assert result == Success({"slept": 0.01})


@pytest.mark.asyncio
async def test_a_sync_function_runs_off_the_event_loop_thread(execution, callables) -> None:
    result = await python.run(execution({"callable": f"{callables}:thread_id"}))

    assert isinstance(result, Success)
    assert result.result != threading.get_ident()


@pytest.mark.asyncio
async def test_an_exception_is_a_retryable_failure_named_after_its_class(
    execution, callables
) -> None:
    builtin_failure = await python.run(execution(builtin("fail"), {"message": "boom"}))
    custom_failure = await python.run(
        execution({"callable": f"{callables}:over_quota"}, {"user": "ada"})
    )

    assert isinstance(builtin_failure, Failure) and isinstance(custom_failure, Failure)
    assert (builtin_failure.error_class, builtin_failure.message) == ("RuntimeError", "boom")
    assert (custom_failure.error_class, custom_failure.message) == (
        "QuotaExceeded",
        "ada is over quota",
    )
    assert builtin_failure.retryable and custom_failure.retryable
    assert "over_quota" in custom_failure.details["traceback"]


@pytest.mark.asyncio
async def test_a_result_that_is_not_json_is_a_bad_result(execution, callables) -> None:
    result = await python.run(execution({"callable": f"{callables}:not_json"}))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("BadResult", False)


@pytest.mark.asyncio
async def test_cancellation_stops_an_async_function(execution, callables, tmp_path) -> None:
    marker = tmp_path / "marker"
    run = python.run(execution({"callable": f"{callables}:wait_forever"}, {"marker": str(marker)}))
    running = asyncio.ensure_future(run)
    for _ in range(3000):  # bounded: until the function runs (a loaded machine may be slow)
        if marker.exists() or running.done():
            break
        await asyncio.sleep(0.01)
    assert marker.read_text() == "waiting"

    running.cancel()
    await asyncio.wait({running}, timeout=30)  # bounded: a run that ignores it fails here

    assert running.cancelled(), "the run did not end as cancelled"
    assert marker.read_text() == "cancelled"


@pytest.mark.parametrize(
    "reference",
    [
        "execution_ledger.adapters.executors.builtin_tasks",
        "execution_ledger.adapters.executors.builtin_tasks:",
        ":echo",
        "no_such_module_here:echo",
        "execution_ledger.adapters.executors.builtin_tasks:no_such_function",
        "CALLABLES_MODULE:answer",
    ],
)
def test_check_settings_refuses_a_reference_that_is_not_an_importable_callable(
    callables, reference: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        python.check_settings({"callable": reference.replace("CALLABLES_MODULE", callables)})

    assert refused.value.where == ("callable",)


def test_check_settings_refuses_unknown_settings() -> None:
    with pytest.raises(ConfigError) as refused:
        python.check_settings({**builtin("echo"), "timeout": 3})

    assert refused.value.where == ("timeout",)


def test_check_settings_accepts_the_builtin_tasks_and_resolves_each_to_its_function() -> None:
    for name in ("echo", "add", "sleep", "fail"):
        assert python.check_settings(builtin(name)) is None  # accepted: no ConfigError
        assert python.parse_settings(builtin(name)) is getattr(builtin_tasks, name)
