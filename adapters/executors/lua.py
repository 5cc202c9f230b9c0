"""Lua executor: runs an inline Lua 5.4 script in a sandboxed child process.

Settings of a task type whose adapter is ``lua``:

- ``script`` (required): Lua source text. Convention: the chunk reads the task's arguments
  from the global ``args`` (a Lua table; JSON lists become sequences, objects tables, null
  values are absent) and ``return``s its result, e.g. ``return {sum = args.a + args.b}``. A
  task that takes its dependencies' results reads them from the global ``deps``
  (``deps.coder.result``).
  The script is compiled (text only, never bytecode) when settings are checked, so a syntax
  error fails at start.
- ``max_memory_bytes`` (default 64 MiB): the Lua allocator refuses more.
- ``max_instructions`` (default 10 million): a count hook, installed on the main thread and
  on every coroutine before ``debug`` is hidden, stops the script past this many VM
  instructions.

Sandbox: the script sees only ``assert error ipairs next pairs pcall select tonumber tostring
type xpcall rawequal rawlen getmetatable setmetatable string table math utf8 coroutine
_VERSION _G`` (no ``os``, ``io``, ``require``, ``load``, ``dofile``, ``debug``, ``package``,
``collectgarbage``, ``print``, ``string.dump``). Each run is a fresh ``python -I`` process
(``lua_sandbox.py``), killed when ``run()`` is cancelled (the worker's deadline), so even a
long C call such as a pathological ``string.find`` pattern is stopped.

The result is the returned value as JSON: tables with keys 1..n become lists, other tables
objects (an empty table becomes ``{}``). Failures (none retryable except ``LuaSandboxError``):
``LuaError`` (runtime error, including use of a global the sandbox does not offer),
``LuaMemoryLimit``, ``LuaInstructionLimit``, ``BadResult``, ``BadArguments``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lupa.lua54 import LuaRuntime

from execution_ledger.adapters.executors.base import Executor, positive_int, refuse_unknown, string
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import Execution, Failure, Success

SANDBOX_PROGRAM = Path(__file__).with_name("lua_sandbox.py")
DEFAULT_MAX_MEMORY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_INSTRUCTIONS = 10_000_000
STDERR_TAIL_CHARS = 4000


@dataclass(frozen=True)
class LuaSettings:
    script: str
    max_memory_bytes: int
    max_instructions: int


class LuaExecutor(Executor[LuaSettings]):
    name = "lua"

    def parse_settings(self, settings: dict[str, Any]) -> LuaSettings:
        refuse_unknown(settings, {"script", "max_memory_bytes", "max_instructions"})
        return LuaSettings(
            script=string(settings, "script"),
            max_memory_bytes=positive_int(settings, "max_memory_bytes", DEFAULT_MAX_MEMORY_BYTES),
            max_instructions=positive_int(settings, "max_instructions", DEFAULT_MAX_INSTRUCTIONS),
        )

    def check_settings(self, settings: dict[str, Any]) -> None:
        script = self.parse_settings({**self.defaults, **settings}).script
        lua = LuaRuntime(register_eval=False, register_builtins=False)
        compiled = lua.globals().load(script, "=script", "t")
        if isinstance(compiled, tuple):
            raise ConfigError(f"does not compile: {compiled[1]}", ("script",))

    async def execute(self, settings: LuaSettings, execution: Execution) -> Success | Failure:
        try:
            request = json.dumps(
                {
                    "script": settings.script,
                    "args": execution.args,
                    "deps": execution.inputs,
                    "max_memory_bytes": settings.max_memory_bytes,
                    "max_instructions": settings.max_instructions,
                },
                allow_nan=False,
            ).encode()
        except (TypeError, ValueError) as exc:
            return Failure("BadArguments", f"args are not JSON: {exc}", retryable=False)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                str(SANDBOX_PROGRAM),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},
                start_new_session=True,
            )
        except OSError as exc:
            return Failure("LuaSandboxError", f"cannot start the Lua sandbox process: {exc}")
        try:
            stdout, stderr = await process.communicate(request)
        finally:
            if process.returncode is None:  # cancelled: stop the script wherever it is
                process.kill()
                await process.wait()
        try:
            reply = json.loads(stdout)
        except ValueError:
            tail = stderr.decode("utf-8", errors="replace")[-STDERR_TAIL_CHARS:]
            return Failure(
                "LuaSandboxError",
                f"the Lua sandbox process ended with code {process.returncode} and no reply",
                details={"stderr": tail},
            )
        if reply["ok"]:
            return Success(reply["result"])
        return Failure(reply["error_class"], reply["message"], False, reply["details"])
