"""What every handler shares: the runtime, a thread pool for the (blocking) database calls,
the log watcher, the limits and the HTTP metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web

from execution_ledger.adapters.http.deadline import database_call
from execution_ledger.adapters.http.limits import HttpLimits, RateLimiter, WaitingSlots
from execution_ledger.adapters.http.metrics import HttpMetrics
from execution_ledger.adapters.ledger_reads import LedgerReads
from execution_ledger.adapters.off_loop import run_off_loop
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.registry import Registry

T = TypeVar("T")


class ServerContext:
    def __init__(self, runtime: Runtime, limits: HttpLimits, db_threads: int = 16) -> None:
        self.runtime = runtime
        self.limits = limits
        self.executor = ThreadPoolExecutor(max_workers=db_threads, thread_name_prefix="http-db")
        self.watcher = runtime.log_watcher()
        self.metrics = HttpMetrics(runtime.reads, runtime.registry.queues)
        self.rate_limiter = RateLimiter(limits.requests_per_second, limits.burst)
        self.waiting = WaitingSlots(limits.max_waiting)
        self.closing = asyncio.Event()

    @property
    def reads(self) -> LedgerReads:
        """What the handlers read (the ledger's query side)."""
        return self.runtime.reads

    @property
    def registry(self) -> Registry:
        return self.runtime.registry

    async def write(self, call: Awaitable[T]) -> T:
        """Await a write of the ``Ledger`` that runs partly on the loop (its commit joins the
        group commit): the request's write, as for ``run``."""
        with database_call(writes=True):
            return await call

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (psycopg, eventsourcing) off the event loop, under the
        request's deadline (``deadline.py``); a call of the ``Ledger`` is the request's
        write."""
        # The request's context (its deadline) goes with the call into the thread.
        with database_call(writes=getattr(function, "__self__", None) is self.runtime.ledger):
            return await run_off_loop(self.executor, function, *args, **kwargs)


CONTEXT = web.AppKey("context", ServerContext)


def context_of(request: web.Request) -> ServerContext:
    return request.app[CONTEXT]
