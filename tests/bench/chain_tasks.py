"""Task callables of the worker benchmark (``python`` adapter), each telling when it started
by the wall clock of the process that runs it, so the benchmark can measure from the
caller's clock rather than from stored timestamps:

- ``stamp``: returns ``{"started": time.time()}`` at its start;
- ``hop``: the same, after enqueueing the next hop of its chain (``{"n": n + 1, "last":
  last}``, until ``n == last``) from inside itself through the Python API, as a user's
  task would: ``open_runtime().ledger.enqueue``, the runtime opened once per process and
  kept in this module. It returns ``{"started": ..., "next": ID}``.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.submission import TaskRequest


@functools.cache
def cached_runtime() -> Runtime:
    """This process's runtime on the ledger the ``LEDGER_*`` variables name."""
    return open_runtime(pool_size=2)


async def stamp(args: dict[str, Any]) -> dict[str, float]:
    return {"started": time.time()}


def hop(args: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    n, last = int(args["n"]), int(args["last"])
    if n >= last:
        return {"started": started, "next": None}
    following = cached_runtime().ledger.enqueue(TaskRequest("hop", {"n": n + 1, "last": last}))
    return {"started": started, "next": str(following.id)}
