"""Lua sandbox process: runs one untrusted Lua 5.4 script and prints its result as JSON.

``LuaExecutor`` starts this file as ``python -I lua_sandbox.py``, writes one JSON request
``{"script", "args", "max_memory_bytes", "max_instructions"}`` to its stdin and reads one JSON
reply from its stdout: ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_class": ..., "message": ..., "details": {...}}``.

It imports nothing from the project. Running each script in its own process lets the parent
kill it at the deadline, even inside one long C call (a pathological ``string.find``) where
the instruction-count hook never fires.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from lupa.lua54 import LuaError, LuaMemoryError, LuaRuntime, lua_type

HOOK_STEP = 1000
MAX_DEPTH = 100

# Runs once with the unrestricted globals, before any user code: builds the sandbox table
# and returns the function that runs a script in it, and a state table Python can read
# without executing Lua instructions (which, past the limit, would trip the hook again).
SANDBOX = r"""
local max_instructions, step = ...
local sethook, create, resume = debug.sethook, coroutine.create, coroutine.resume
local load, pack, unpack = load, table.pack, table.unpack
local state = {used = 0, exceeded = false}

local function count_instructions()
  state.used = state.used + step
  if state.used > max_instructions then
    state.exceeded = true
    sethook(count_instructions, "", 1)  -- from now on, fail at every instruction
    error("instruction limit exceeded", 0)
  end
end

local function hooked(co)
  sethook(co, count_instructions, "", state.exceeded and 1 or step)
  return co
end

string.dump = nil
getmetatable("").__metatable = false

local env = {
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
  pcall = pcall, select = select, tonumber = tonumber, tostring = tostring, type = type,
  xpcall = xpcall, rawequal = rawequal, rawlen = rawlen,
  getmetatable = getmetatable, setmetatable = setmetatable,
  string = string, table = table, math = math, utf8 = utf8, _VERSION = _VERSION,
  coroutine = {
    create = function(f) return hooked(create(f)) end,
    wrap = function(f)
      local co = hooked(create(f))
      return function(...)
        local results = pack(resume(co, ...))
        if not results[1] then error(results[2], 0) end
        return unpack(results, 2, results.n)
      end
    end,
    resume = resume, yield = coroutine.yield, status = coroutine.status,
    running = coroutine.running, isyieldable = coroutine.isyieldable,
    close = coroutine.close,
  },
}
env._G = env

local function run(script, args, deps)
  local chunk, message = load(script, "=script", "t", env)
  if not chunk then error(message, 0) end
  env.args = args
  env.deps = deps
  sethook(count_instructions, "", step)
  return chunk()
end

return run, state
"""


class NotJsonable(Exception):
    """The script returned a value that has no JSON form."""


def run(request: dict[str, Any]) -> dict[str, Any]:
    lua = LuaRuntime(
        max_memory=request["max_memory_bytes"], register_eval=False, register_builtins=False
    )
    run_script, state = lua.execute(SANDBOX, request["max_instructions"], HOOK_STEP)
    try:
        value = run_script(
            request["script"],
            lua.table_from(request["args"], recursive=True),
            lua.table_from(request.get("deps") or {}, recursive=True),
        )
        return {"ok": True, "result": to_json(value, 0)}
    except LuaError as exc:
        if state["exceeded"]:
            limit = request["max_instructions"]
            return failure("LuaInstructionLimit", f"the script ran more than {limit} instructions")
        if isinstance(exc, LuaMemoryError):
            limit = request["max_memory_bytes"]
            return failure("LuaMemoryLimit", f"the script needed more than {limit} bytes")
        message, _, traceback = str(exc).partition("\nstack traceback:\n")
        return failure(
            "LuaError", message or "the script raised a non-string error", traceback=traceback
        )
    except (NotJsonable, UnicodeDecodeError) as exc:
        return failure("BadResult", f"the script's result is not JSON-able: {exc}")


def failure(error_class: str, message: str, **details: str) -> dict[str, Any]:
    return {"ok": False, "error_class": error_class, "message": message, "details": details}


def to_json(value: Any, depth: int) -> Any:
    """Lua tables with keys 1..n become lists, other tables dicts with string keys."""
    if depth > MAX_DEPTH:
        raise NotJsonable(f"nested more than {MAX_DEPTH} levels deep (a cycle?)")
    kind = lua_type(value)
    if kind is None:
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float) and math.isfinite(value):
            return value
        raise NotJsonable(f"{value!r} has no JSON form")
    if kind != "table":
        raise NotJsonable(f"a Lua {kind} has no JSON form")
    items = list(value.items())
    keys = [key for key, _ in items]
    if keys and all(type(key) is int for key in keys) and set(keys) == set(range(1, len(keys) + 1)):
        return [to_json(item, depth + 1) for _, item in sorted(items, key=lambda kv: kv[0])]
    result = {}
    for key, item in items:
        if isinstance(key, bool) or not isinstance(key, (str, int, float)):
            raise NotJsonable(f"the table key {key!r} is not a string or number")
        result[str(key)] = to_json(item, depth + 1)
    return result


def main() -> None:
    reply = run(json.load(sys.stdin))
    json.dump(reply, sys.stdout, allow_nan=False)


if __name__ == "__main__":
    main()
