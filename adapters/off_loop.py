"""Run a blocking call (psycopg, eventsourcing, a file) off the event loop: the one helper.

The call runs in a thread of the executor the caller names (each way in keeps its own pool:
the HTTP server's ``http-db`` threads, the NATS ingress's, the worker node's; None is the
loop's default one), with a copy of the caller's context, as ``asyncio.to_thread`` does. So
a context variable set on the loop goes with the call into the thread: the HTTP request's
deadline (``deadlines.py``), which the connection pool reads in whatever thread waits for a
connection.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")


def start_off_loop(
    executor: Executor | None, function: Callable[..., T], /, *args: Any, **kwargs: Any
) -> asyncio.Future[T]:
    """Start ``function(*args, **kwargs)`` in a thread of ``executor`` with the caller's
    context; the future of its result (for a caller that does not await it at once)."""
    call = partial(contextvars.copy_context().run, function, *args, **kwargs)
    return asyncio.get_running_loop().run_in_executor(executor, call)


async def run_off_loop(
    executor: Executor | None, function: Callable[..., T], /, *args: Any, **kwargs: Any
) -> T:
    """``function(*args, **kwargs)`` run in a thread of ``executor`` with the caller's
    context, awaited."""
    return await start_off_loop(executor, function, *args, **kwargs)
