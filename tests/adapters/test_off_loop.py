"""The one "run this blocking call off the event loop" helper: the call runs in a thread of
the executor named, with the caller's context (the HTTP request's deadline depends on it)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar

import pytest

from execution_ledger.adapters.deadlines import NoConnectionInTime, call_deadline, current_deadline
from execution_ledger.adapters.off_loop import run_off_loop, start_off_loop

_REQUEST: ContextVar[str | None] = ContextVar("request", default=None)


def _where(suffix: str, *, sep: str) -> str:
    """Which thread runs the call, the request it sees, and its own argument."""
    return f"{threading.current_thread().name}{sep}{_REQUEST.get()}{sep}{suffix}"


def test_a_call_runs_in_a_thread_of_the_named_executor_with_the_callers_context() -> None:
    async def main() -> str:
        _REQUEST.set("r-1")
        with ThreadPoolExecutor(1, thread_name_prefix="test-db") as pool:
            return await run_off_loop(pool, _where, "x", sep="|")

    thread, request, suffix = asyncio.run(main()).split("|")
    assert thread.startswith("test-db") and thread != threading.current_thread().name
    assert (request, suffix) == ("r-1", "x")


def test_a_started_call_sees_the_context_of_its_start_not_later_changes() -> None:
    async def main() -> str:
        _REQUEST.set("before")
        gate = threading.Event()

        def wait_then_read() -> str | None:
            gate.wait(5)
            return _REQUEST.get()

        future = start_off_loop(None, wait_then_read)
        _REQUEST.set("after")  # the loop's context moves on; the call's copy does not
        gate.set()
        return str(await future)

    assert asyncio.run(main()) == "before"


def test_the_request_deadline_reaches_the_thread_and_its_error_comes_back() -> None:
    """What the connection pool does in the thread: read the caller's deadline, and refuse
    once it passed (``NoConnectionInTime``, raised to the awaiting caller)."""

    def wait_for_connection() -> float:
        deadline = current_deadline()
        assert deadline is not None
        return deadline.connection_wait(2.0)

    async def main(seconds: float) -> float:
        with call_deadline(seconds):
            return await run_off_loop(None, wait_for_connection)

    assert 0 < asyncio.run(main(1.0)) <= 1.0
    with pytest.raises(NoConnectionInTime):
        asyncio.run(main(-1.0))
