"""The stretch of the log read last, kept for the other readers of this process.

The projection process runs four runners on one store; each follows the head of the log and
used to read (a round trip, every row turned into a dict, each event found in the decoded
cache) the same batch the others had just read. ``LogWindow`` keeps the events of the last
reads at the head, ``(low, high]``, gap-free: every event that will ever exist between
those positions is in it, because each read that built it stopped at the log's horizon
(``log_horizon.py``) and events are never changed. A reader whose position falls inside the
window is served from it; one at its end reads the database, once for all (the others wait
for that read and are served from it); one behind it reads for itself and leaves the window
alone (a rebuild, a replay). The window holds at most ``capacity`` events; the oldest go.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from typing import Generic, NamedTuple, Protocol, TypeVar


class Positioned(Protocol):
    @property
    def position(self) -> int: ...


E = TypeVar("E", bound=Positioned)


class _Span(NamedTuple, Generic[E]):
    """What the window holds, replaced whole (readers take it without a lock)."""

    low: int  # exclusive: every event with low < position <= high is here
    events: list[E]
    positions: list[int]

    @property
    def high(self) -> int:
        return self.positions[-1] if self.positions else self.low


class LogWindow(Generic[E]):
    def __init__(self, capacity: int = 5000) -> None:
        self.capacity = capacity
        self._span: _Span[E] = _Span(0, [], [])
        self._reading = threading.Lock()  # one database read at the head at a time

    @property
    def high(self) -> int:
        return self._span.high

    def read(
        self,
        after: int,
        limit: int,
        until: int | None,
        from_database: Callable[[int, int, int | None], Sequence[E]],
    ) -> list[E]:
        """Events with ``after < position <= until``, at most ``limit``, as one read of the
        database would give them: the part the window covers from it, the rest from
        ``from_database`` (which must stop at the log's horizon), which extends the window
        when it reads on from its end. A reader behind the window reads for itself."""
        span = self._span
        if span.events and span.low <= after < span.high:
            served = self._serve(span, after, limit, until)
            if len(served) == limit or (until is not None and until <= span.high):
                return served
            rest = self._read_at_head(span.high, limit - len(served), until, from_database)
            return served + rest
        if after < span.high:  # behind the window (a rebuild, a replay)
            return list(from_database(after, limit, until))
        return self._read_at_head(after, limit, until, from_database)

    def _read_at_head(
        self,
        after: int,
        limit: int,
        until: int | None,
        from_database: Callable[[int, int, int | None], Sequence[E]],
    ) -> list[E]:
        """Read on from the window's end, once for the readers arriving meanwhile (a
        reader that waited here takes what the one before it read, then reads the rest)."""
        with self._reading:
            span = self._span
            served: list[E] = []
            if span.events and span.low <= after < span.high:  # another thread read on
                served = self._serve(span, after, limit, until)
                if len(served) == limit or (until is not None and until <= span.high):
                    return served
                after, limit = span.high, limit - len(served)
            events = list(from_database(after, limit, until))
            self._extend(after, events)
            return served + events

    @staticmethod
    def _serve(span: _Span[E], after: int, limit: int, until: int | None) -> list[E]:
        start = bisect.bisect_right(span.positions, after)
        stop = start + limit
        if until is not None:
            stop = min(stop, bisect.bisect_right(span.positions, until))
        return span.events[start:stop]

    def _extend(self, after: int, events: list[E]) -> None:
        if not events:
            return
        span = self._span
        new_positions = [e.position for e in events]
        if span.events and after == span.high:
            low, kept, positions = span.low, span.events + events, span.positions + new_positions
        else:  # a window starting here (after a gap in what this process read)
            low, kept, positions = after, events, new_positions
        if len(kept) > self.capacity:
            dropped = len(kept) - self.capacity
            low = positions[dropped - 1]
            kept, positions = kept[dropped:], positions[dropped:]
        self._span = _Span(low, kept, positions)  # published whole: readers take no lock
