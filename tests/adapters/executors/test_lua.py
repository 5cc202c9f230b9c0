"""The Lua executor runs a script in a sandboxed Lua 5.4 child process."""

from __future__ import annotations

import asyncio
import os

import psutil
import pytest

from execution_ledger.adapters.executors.lua import LuaExecutor
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import Failure, Success

lua = LuaExecutor()

# A subprocess, connection or future left behind by a cancelled run fails the test.
pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)


def sandbox_processes() -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process(os.getpid()).children()
        if any("lua_sandbox.py" in part for part in child.cmdline())
    ]


@pytest.mark.asyncio
async def test_a_script_returns_a_value_computed_from_its_args(execution) -> None:
    script = "return {sum = args.a + args.b, doubled = {args.list[1] * 2, args.list[2] * 2}}"

    result = await lua.run(execution({"script": script}, {"a": 1, "b": 2.5, "list": [3, 4]}))

    assert result == Success({"sum": 3.5, "doubled": [6, 8]})


@pytest.mark.asyncio
async def test_nested_args_arrive_as_tables_and_sequences_come_back_as_lists(execution) -> None:
    args = {"user": {"name": "Ada", "tags": ["x", "y"]}}
    script = "return {args.user.name, #args.user.tags, args.user.tags}"

    result = await lua.run(execution({"script": script}, args))

    assert result == Success(["Ada", 2, ["x", "y"]])


@pytest.mark.asyncio
async def test_a_runtime_error_is_a_lua_error_that_is_not_retried(execution) -> None:
    result = await lua.run(execution({"script": "error('no luck')"}))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("LuaError", False)
    assert result.message == "script:1: no luck"


@pytest.mark.asyncio
async def test_calling_os_execute_fails_because_the_sandbox_has_no_os(execution, tmp_path) -> None:
    victim = tmp_path / "x"
    victim.write_text("still here")
    script = f'os.execute("rm -rf {victim}")'

    result = await lua.run(execution({"script": script}))

    assert isinstance(result, Failure)
    assert result.error_class == "LuaError"
    assert "global 'os'" in result.message
    assert victim.exists()


@pytest.mark.asyncio
async def test_dangerous_globals_and_string_dump_are_absent(execution) -> None:
    script = """
    local names = {"os", "io", "require", "load", "loadstring", "dofile", "loadfile", "debug",
                   "package", "collectgarbage", "print", "rawset", "python"}
    local present = {}
    for _, name in ipairs(names) do
      if _G[name] ~= nil then present[#present + 1] = name end
    end
    return {present = present, dump = string.dump == nil and ("").dump == nil,
            string_metatable = getmetatable("")}
    """

    result = await lua.run(execution({"script": script}))

    assert result == Success({"present": {}, "dump": True, "string_metatable": False})


@pytest.mark.asyncio
async def test_a_script_using_too_much_memory_hits_the_memory_limit(execution) -> None:
    script = "local t = {} for i = 1, 1e8 do t[i] = string.rep('x', 64) .. i end"

    result = await lua.run(execution({"script": script, "max_memory_bytes": 4 * 2**20}))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("LuaMemoryLimit", False)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "script",
    [
        "while true do end",
        "while true do pcall(function() while true do end end) end",
        "coroutine.wrap(function() while true do end end)()",
    ],
    ids=["loop", "loop-catching-the-limit-error", "loop-in-a-coroutine"],
)
async def test_a_script_running_too_many_instructions_hits_the_instruction_limit(
    execution, script: str
) -> None:
    result = await lua.run(execution({"script": script, "max_instructions": 100_000}))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("LuaInstructionLimit", False)


@pytest.mark.asyncio
async def test_a_long_c_call_is_killed_at_the_deadline(execution, is_alive) -> None:
    script = 'return string.find(string.rep("a", 40), string.rep("a*", 40) .. "b")'
    running = asyncio.ensure_future(lua.run(execution({"script": script})))
    while not sandbox_processes():
        await asyncio.sleep(0.01)
    [child] = sandbox_processes()

    deadline = asyncio.ensure_future(asyncio.wait_for(running, 0.5))  # the worker's deadline
    await asyncio.wait({deadline}, timeout=30)  # bounded: a run that ignores it fails here

    assert deadline.done(), "the run did not stop when cancelled at its deadline"
    with pytest.raises(TimeoutError):
        deadline.result()
    assert not is_alive(child.pid)


@pytest.mark.asyncio
async def test_a_result_with_no_json_form_is_a_bad_result(execution) -> None:
    result = await lua.run(execution({"script": "return {f = function() end}"}))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("BadResult", False)


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ({}, ("script",)),
        ({"script": "return ("}, ("script",)),
        ({"script": "return 1", "max_memory_bytes": 0}, ("max_memory_bytes",)),
        ({"script": "return 1", "max_instructions": "many"}, ("max_instructions",)),
        ({"script": "return 1", "sandbox": False}, ("sandbox",)),
    ],
)
def test_check_settings_refuses_bad_settings(settings: dict, where: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as refused:
        lua.check_settings(settings)

    assert refused.value.where == where


@pytest.mark.asyncio
async def test_check_settings_accepts_a_script_that_compiles_and_it_runs_as_written(
    execution,
) -> None:
    settings = {"script": "return args.n * args.n", "max_instructions": 1000}

    assert lua.check_settings(settings) is None  # accepted: no ConfigError
    assert lua.parse_settings(settings).max_instructions == 1000
    assert await lua.run(execution(settings, {"n": 7})) == Success(49)
