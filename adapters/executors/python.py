"""Python executor: calls an importable ``module:function`` with the task's args.

Settings of a task type whose adapter is ``python``:

- ``callable`` (required): ``"package.module:function"`` (the part after the colon may be a
  dotted path such as ``Class.method``). It is imported and checked to be callable when
  settings are checked, so a typo fails at start.

The function receives the args as ONE positional argument, a dict: ``function(args)``; a
function with a second parameter also gets a ``TaskContext`` (``task_context.py``: its
dependencies' results as ``inputs``, ``progress``, ``spawn`` children):
``function(args, context)``.
An ``async def`` function is awaited in the worker's event loop; cancelling ``run()`` (the
worker's deadline) cancels it. A plain function runs in a thread (``asyncio.to_thread``) so it
does not block the loop; Python cannot stop a thread, so on cancellation a sync function keeps
running until it returns by itself and its result is discarded. Prefer async functions for
work that may need to be stopped.

The return value must be JSON-serialisable; it is returned as its JSON form (tuples become
lists). Failures: ``BadResult`` (not retryable) for a non-JSON result; an exception raised by
the function gives ``Failure(<exception class name>, str(exc), retryable=True)`` with the
traceback in ``details`` — a task type's retry policy lists the classes not worth retrying.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import inspect
import json
import traceback
from collections.abc import Callable
from typing import Any

from execution_ledger.adapters.executors.base import Executor, refuse_unknown, string
from execution_ledger.adapters.executors.task_context import TaskContext
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import Execution, Failure, Success

TRACEBACK_TAIL_CHARS = 4000


class PythonExecutor(Executor[Callable[[dict[str, Any]], Any]]):
    name = "python"

    def parse_settings(self, settings: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
        refuse_unknown(settings, {"callable"})
        return load_callable(string(settings, "callable"))

    async def execute(
        self, settings: Callable[[dict[str, Any]], Any], execution: Execution
    ) -> Success | Failure:
        function = settings
        params: list[Any] = [dict(execution.args)]
        context = TaskContext(execution) if _takes_context(function) else None
        if context is not None:
            params.append(context)
        try:
            if inspect.iscoroutinefunction(function):
                value = await function(*params)
            else:
                value = await asyncio.to_thread(function, *params)
        except Exception as exc:
            return Failure(
                type(exc).__name__,
                str(exc),
                retryable=True,
                details={"traceback": traceback.format_exc()[-TRACEBACK_TAIL_CHARS:]},
            )
        try:
            result = json.loads(json.dumps(value, allow_nan=False))
            spawn = context.spawned() if context is not None else None
            return Success(result, spawn=spawn)
        except (TypeError, ValueError) as exc:
            return Failure("BadResult", f"the result is not JSON-serialisable: {exc}", False)


@functools.lru_cache(maxsize=1024)
def _takes_context(function: Callable[..., Any]) -> bool:
    """True when ``function`` has a second positional parameter (or ``*args``)."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in positional[1:])


# The built-in callables' modules before the one import name (``adapters.executors.
# builtin_tasks:echo``): registries written then, and the registry versions recorded in
# the log, keep naming them so.
_OLD_PACKAGES = ("adapters.", "domain.", "processors.", "projections.")


def _current_name(module_name: str) -> str:
    if module_name.startswith(_OLD_PACKAGES):
        current = f"execution_ledger.{module_name}"
        try:
            if importlib.util.find_spec(current) is not None:
                return current
        except ImportError:  # a parent package that does not exist under the new name
            pass
    return module_name


def load_callable(reference: str) -> Callable[[dict[str, Any]], Any]:
    """Import ``"module:attribute.path"``; raise ``ConfigError`` unless it is callable."""
    module_name, colon, attribute_path = reference.partition(":")
    if not colon or not module_name or not attribute_path:
        raise ConfigError(f"must look like 'module:function', got {reference!r}", ("callable",))
    try:
        target: Any = importlib.import_module(_current_name(module_name))
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}", ("callable",)) from exc
    for attribute in attribute_path.split("."):
        try:
            target = getattr(target, attribute)
        except AttributeError as exc:
            raise ConfigError(f"{reference!r} does not exist", ("callable",)) from exc
    if not callable(target):
        raise ConfigError(f"{reference!r} is not callable", ("callable",))
    return target
