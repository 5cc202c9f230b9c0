"""``AsyncLedgerClient``: ``LedgerClient`` for asyncio programs (httpx.AsyncClient); the
same calls (``calls.py``), the same typed results and the same exceptions.

    async with AsyncLedgerClient("http://127.0.0.1:8080", token="...") as ledger:
        task = await ledger.enqueue("echo", {"n": 1}, wait=30)
        async for event in ledger.stream_events(after=0):
            ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeVar
from uuid import UUID

import httpx

from execution_ledger.adapters.client import calls
from execution_ledger.adapters.client.calls import Call
from execution_ledger.adapters.client.errors import ConnectionFailed
from execution_ledger.adapters.client.models import (
    EventPage,
    EventView,
    GraphView,
    TaskPage,
    TaskView,
)
from execution_ledger.adapters.client.sse import FrameReader
from execution_ledger.adapters.client.transport import client_options, read_answer, stream_request

T = TypeVar("T")


class AsyncLedgerClient:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(**client_options(url, token, timeout), transport=transport)

    async def __aenter__(self) -> AsyncLedgerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        """Send one call; its typed result, or the error answer raised."""
        try:
            answer = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.body,
                timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as error:
            raise ConnectionFailed(f"{call.method} {call.path}: {error}") from error
        return read_answer(call, answer.status_code, answer.content)

    async def enqueue(
        self,
        type_name: str,
        args: Mapping[str, Any] | None = None,
        wait: float | None = None,
        **options: Any,
    ) -> TaskView:
        return await self.send(calls.enqueue(type_name, args, wait, **options))

    async def enqueue_graph(self, tasks: Sequence[Mapping[str, Any]]) -> GraphView:
        return await self.send(calls.enqueue_graph(tasks))

    async def task(self, task_id: UUID | str) -> TaskView:
        return await self.send(calls.get_task(task_id))

    async def tasks(self, **filters: Any) -> TaskPage:
        return await self.send(calls.list_tasks(**filters))

    async def history(self, task_id: UUID | str) -> list[EventView]:
        return await self.send(calls.history(task_id))

    async def cancel(self, task_id: UUID | str, reason: str = "") -> TaskView:
        return await self.send(calls.cancel(task_id, reason))

    async def retry(self, task_id: UUID | str) -> TaskView:
        return await self.send(calls.retry(task_id))

    async def signal(self, task_id: UUID | str, name: str, data: Any = None) -> TaskView:
        return await self.send(calls.signal(task_id, name, data))

    async def events(self, after: int = 0, limit: int | None = None) -> EventPage:
        return await self.send(calls.events(after, limit))

    async def queues(self) -> list[dict[str, Any]]:
        return await self.send(calls.queues())

    async def pause_queue(self, name: str) -> dict[str, Any]:
        return await self.send(calls.pause_queue(name))

    async def resume_queue(self, name: str) -> dict[str, Any]:
        return await self.send(calls.resume_queue(name))

    async def health(self) -> dict[str, Any]:
        return await self.send(calls.health())

    async def stream_events(self, after: int | None = None) -> AsyncIterator[EventView]:
        """The log's events after ``after`` (None: from now on), as they are appended."""
        method, path, params = stream_request(after)
        try:
            async with self._http.stream(method, path, params=params, timeout=None) as answer:
                if answer.status_code != 200:
                    read_answer(calls.health(), answer.status_code, await answer.aread())
                reader = FrameReader()
                async for line in answer.aiter_lines():
                    event = reader.line(line)
                    if event is not None:
                        yield event
        except httpx.HTTPError as error:
            raise ConnectionFailed(f"{method} {path}: {error}") from error
