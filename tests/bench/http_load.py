"""The HTTP load generator of the benchmarks: N asyncio clients on keep-alive aiohttp
connections, each posting ``{"type": "echo", "args": {"i": n}}`` in a loop, one request at
a time, to a server in another process. The same generator is pointed at the ledger and at
its ceiling, so their figures compare.

Requests sent during a warm-up are not counted; after it, every answer is counted by
status, and the latency of each 2xx answer (from just before the request to its whole body
read) is kept for the percentiles.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field

import aiohttp

from tests.bench.common import percentile


@dataclass
class LoadResult:
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, 2xx answers only
    failures: dict[int, int] = field(default_factory=dict)  # status -> count
    first_failure: str = ""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def ms(self, p: float) -> float:
        return percentile(self.latencies, p) * 1000 if self.latencies else float("nan")


async def _client(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    numbers: itertools.count[int],
    measure_from: float,
    until: float,
    result: LoadResult,
) -> None:
    while (started := time.perf_counter()) < until:
        body = json.dumps({"type": "echo", "args": {"i": next(numbers)}})
        async with session.post(url, data=body, headers=headers) as response:
            text = await response.read()
        if started < measure_from:
            continue
        if 200 <= response.status < 300:
            result.latencies.append(time.perf_counter() - started)
        else:
            result.failures[response.status] = result.failures.get(response.status, 0) + 1
            result.first_failure = result.first_failure or text[:300].decode(errors="replace")


async def run_load(
    port: int, clients: int, seconds: float, warmup: float = 1.0, path: str = "/v1/tasks"
) -> LoadResult:
    """``clients`` clients posting to ``127.0.0.1:port`` for ``warmup + seconds``; the
    result counts the last ``seconds`` only."""
    url = f"http://127.0.0.1:{port}{path}"
    headers = {"Content-Type": "application/json", "Host": f"127.0.0.1:{port}"}
    result = LoadResult(seconds)
    numbers = itertools.count()
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        measure_from = time.perf_counter() + warmup
        until = measure_from + seconds
        await asyncio.gather(
            *(
                _client(session, url, headers, numbers, measure_from, until, result)
                for _ in range(clients)
            )
        )
    return result
