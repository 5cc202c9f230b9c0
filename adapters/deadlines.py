"""The deadline of the current call: how long it may still wait for a database connection.

A way in that answers callers with their own timeouts (the HTTP API) opens a ``CallDeadline``
for each call (``call_deadline``); the connection pool (``postgres/connection_pool.py``)
reads it in whatever thread does the blocking work (the context is copied there) and gives
up waiting for a connection when it passes, raising ``NoConnectionInTime`` *before* anything
is written. Once the call's write was made (``wrote``), its later reads are no longer cut
short: the call reports what it committed.

``NoConnectionInTime`` is not a database error on purpose: the eventsourcing library
retries its own operations on database errors, which would go on waiting past the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


class NoConnectionInTime(Exception):
    """No database connection was had before the call's deadline; nothing was written."""


@dataclass
class CallDeadline:
    """``seconds`` to get a connection, from the call's start (or, with ``per_call``, from
    the start of each database call: reads such as streams make many)."""

    seconds: float
    per_call: bool = False
    at: float = field(default=0.0)
    wrote: bool = False

    def __post_init__(self) -> None:
        self.at = time.monotonic() + self.seconds

    def start_call(self) -> None:
        """A database call starts: with ``per_call``, it gets the whole deadline again."""
        if self.per_call:
            self.at = time.monotonic() + self.seconds

    def connection_wait(self, default: float) -> float:
        """Seconds a connection may still be waited for (at most ``default``); raises
        ``NoConnectionInTime`` when none are left."""
        if self.wrote:
            return default
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.passed()
        return min(default, left)

    def passed(self) -> NoConnectionInTime:
        return NoConnectionInTime(
            f"no database connection within {self.seconds:g} s; nothing was written"
        )


_CURRENT: ContextVar[CallDeadline | None] = ContextVar("call_deadline", default=None)


def current_deadline() -> CallDeadline | None:
    return _CURRENT.get()


@contextmanager
def call_deadline(seconds: float, *, per_call: bool = False) -> Iterator[CallDeadline]:
    """A deadline for the calls made in this context (and in contexts copied from it)."""
    deadline = CallDeadline(seconds, per_call)
    token = _CURRENT.set(deadline)
    try:
        yield deadline
    finally:
        _CURRENT.reset(token)
