"""A quantity over simulated time in a bounded number of buckets.

Buckets start one second wide; when the window outgrows ``size`` of them, neighbours are
merged in pairs and the width doubles. So a ten-second window and a day both come out as at
most ``size`` points, as fine as the window allows, in flat memory.
"""

from __future__ import annotations

from collections.abc import Callable

SIZE = 240


class Series:
    """``add(at, value)`` combines ``value`` into the bucket of time ``at`` with ``merge``
    (``max`` for a level such as the queue depth, ``sum`` for a count such as ends). With
    ``carry``, a bucket nothing was added to holds the last value (a level stays where it
    was); else it holds 0."""

    def __init__(
        self,
        merge: Callable[[float, float], float],
        carry: bool = False,
        size: int = SIZE,
        width: float = 1.0,
    ) -> None:
        self.merge = merge
        self.carry = carry
        self.size = size
        self.width = width
        self.origin: float | None = None
        self.buckets: list[float] = []

    def add(self, at: float, value: float) -> None:
        if self.origin is None:
            self.origin = at
        index = max(0, int((at - self.origin) // self.width))
        while index >= self.size:
            self._halve()
            index = max(0, int((at - self.origin) // self.width))
        if index >= len(self.buckets):
            gap = self.buckets[-1] if self.carry and self.buckets else 0.0
            self.buckets.extend([gap] * (index + 1 - len(self.buckets)))
            self.buckets[index] = value
        else:
            self.buckets[index] = self.merge(self.buckets[index], value)

    def _halve(self) -> None:
        pairs = [self.buckets[i : i + 2] for i in range(0, len(self.buckets), 2)]
        self.buckets = [p[0] if len(p) == 1 else self.merge(p[0], p[1]) for p in pairs]
        self.width *= 2

    def as_json(self) -> dict[str, object]:
        return {"bucket_seconds": self.width, "values": [round(v, 6) for v in self.buckets]}
