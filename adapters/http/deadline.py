"""Every request's deadline: answered before common client timeouts, never a write after an
error answer, never an error answer for a write that committed.

``deadline_middleware`` opens a ``CallDeadline`` (``adapters/deadlines.py``) of
``[http] request_deadline_seconds`` for each request. The blocking work runs in threads
(``ServerContext.run``, which copies the request's context there), and the connection pool
gives up waiting for a connection once the deadline passes, in that thread, before it has
written anything: the request is answered 503 with ``Retry-After``. The middleware never
answers on the clock alone (the thread would go on and might commit after the answer): it
waits for the thread, which does not wait past the deadline for a connection.

A write request's deadline runs from its start until its write (a call of the ``Ledger``)
returned; from then on the request reports what it committed, however long its reads take.
A read request (GET, HEAD) gets the deadline for each database call, so a stream or a long
wait is not cut short. A write whose connection was lost while it was under way may or may
not have committed: that is said as such (``outcome_unknown``), never as a 503; nor is a
read that fails after the write committed (``saved_but_unreadable``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import psycopg
from aiohttp import web

from execution_ledger.adapters.deadlines import NoConnectionInTime, call_deadline, current_deadline
from execution_ledger.adapters.http.errors import DATABASE_ERRORS, HttpError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RETRY_AFTER = "1"  # seconds


def deadline_middleware(seconds: float) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A ``seconds`` deadline for every request (see the module's docstring)."""

    @web.middleware
    async def deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
        with call_deadline(seconds, per_call=request.method in READ_METHODS):
            try:
                return await handler(request)
            except NoConnectionInTime as error:
                raise HttpError(
                    503,
                    "database_unavailable",
                    f"the database is unavailable ({error}); try again shortly",
                    {"Retry-After": RETRY_AFTER},
                ) from error

    return deadline


@contextmanager
def database_call(*, writes: bool) -> Iterator[None]:
    """Around one blocking database call of a request: a read call gets its own deadline;
    a write call that returned lifts the deadline; a write call that lost its connection
    underway is ``outcome_unknown``; a database failure after the write returned is
    ``saved_but_unreadable`` (both 500: neither invites sending the write again)."""
    deadline = current_deadline()
    if deadline is None:
        yield
        return
    deadline.start_call()
    try:
        yield
    except DATABASE_ERRORS as error:
        if deadline.wrote:
            raise saved_but_unreadable() from error
        if writes and _connection_lost(error):
            raise outcome_unknown() from error
        raise
    if writes:
        deadline.wrote = True


def saved_but_unreadable() -> HttpError:
    return HttpError(
        500,
        "saved_but_unreadable",
        "the write was saved, but reading it back failed (the database is unavailable); "
        "look it up later rather than sending it again",
    )


def outcome_unknown() -> HttpError:
    return HttpError(
        500,
        "outcome_unknown",
        "the database connection was lost while this write was under way: it may have been "
        "saved or not; look it up (or send it again with the same idempotency key)",
    )


def _connection_lost(error: BaseException) -> bool:
    """A failure the server did not report (no SQLSTATE): the connection went away, so the
    server may have committed what it was sent."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, psycopg.Error):
            return cause.sqlstate is None
        cause = cause.__cause__
    return True
