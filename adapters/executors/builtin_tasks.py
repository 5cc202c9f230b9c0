"""Demo callables for the ``python`` executor (``adapters.executors.builtin_tasks:echo`` ...).

Each takes the task's args as one dict and returns a JSON-able value.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any


def echo(args: dict[str, Any]) -> dict[str, Any]:
    """Return the args unchanged."""
    return args


def add(args: dict[str, Any]) -> dict[str, Any]:
    """Return ``{"sum": a + b}``."""
    return {"sum": args["a"] + args["b"]}


async def sleep(args: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``seconds`` (default 1), then return ``{"slept": seconds}``."""
    seconds = float(args.get("seconds", 1))
    await asyncio.sleep(seconds)
    return {"slept": seconds}


def fail(args: dict[str, Any]) -> None:
    """Raise ``RuntimeError(message)``: a task that always fails."""
    raise RuntimeError(args.get("message", "failed on purpose"))


async def noop(args: dict[str, Any]) -> None:
    """Do nothing (benchmarks measure the ledger, not the work)."""
    return None


def log_attempt(row: dict[str, Any]) -> None:
    """A demo learn hook: logs each finished attempt of its task type."""
    logging.getLogger("ledger.learn").info(
        "attempt %s of %s (%s): %s in %.3f s",
        row["attempt"],
        row["task_id"],
        row["task_type"],
        row["outcome"],
        row["run_s"],
    )
