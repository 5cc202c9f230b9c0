"""Limits and rules of the HTTP API, from the file's ``[http]`` table: body size, how long a
call may wait, how many may wait at once, an optional request rate per principal (429 past
any of the last two); how long a client may take to send its headers and its body, how long
an idle connection stays open, how many connections may be open; which ``Host`` names and
browser origins the server answers (``browser_guard.py``), and whether ad-hoc tasks are
accepted when no principals are configured."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from execution_ledger.adapters.http.errors import HttpError


@dataclass(frozen=True)
class HttpLimits:
    max_body_bytes: int = 8 * 1024 * 1024
    max_wait_seconds: float = 60.0
    # Calls holding a connection open at once: ``?wait`` enqueues and event streams.
    max_waiting: int = 200
    # Per principal; None turns rate limiting off.
    requests_per_second: float | None = None
    burst: int = 50
    stream_keepalive_seconds: float = 15.0
    # A request without a database connection by then is answered 503, nothing written
    # (``deadline.py``); below common client timeouts (10 s and up).
    request_deadline_seconds: float = 5.0
    # Slow clients (``connections.py``): the whole header block, then the whole body, must
    # arrive within these; an idle keep-alive connection is closed after the third.
    header_read_timeout_seconds: float = 10.0
    body_read_timeout_seconds: float = 30.0
    keepalive_timeout_seconds: float = 75.0
    max_connections: int = 1000
    # Browser-facing rules (``browser_guard.py``): extra ``Host`` names ("name" or
    # "name:port"), origins ("https://app.example.com") allowed to change state (and given
    # CORS headers), ad-hoc tasks over HTTP with no principals configured.
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    allow_adhoc_without_principals: bool = False


def too_many(message: str, retry_after: float) -> HttpError:
    return HttpError(
        429, "rate_limited", message, headers={"Retry-After": str(max(1, math.ceil(retry_after)))}
    )


class RateLimiter:
    """A token bucket per principal: ``burst`` requests at once, refilled at ``rate`` a second."""

    def __init__(self, rate: float | None, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def check(self, key: str) -> None:
        """Take one token for ``key`` or raise 429 with the seconds until the next one."""
        if self.rate is None:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise too_many(
                f"more than {self.rate:g} requests a second for {key!r}; slow down",
                (1.0 - tokens) / self.rate,
            )
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:  # forget idle principals (full buckets)
            self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self.burst - 1}


class WaitingSlots:
    """At most ``limit`` long calls (waits and streams) at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        if self.in_use >= self.limit:
            raise too_many(f"{self.limit} calls are already waiting; try again later", 1.0)
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1
