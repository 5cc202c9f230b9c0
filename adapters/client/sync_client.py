"""``LedgerClient``: a running ledger service over HTTP, from a program that blocks (httpx).

    from execution_ledger.adapters.client import LedgerClient
    with LedgerClient("http://127.0.0.1:8080", token="...") as ledger:
        task = ledger.enqueue("echo", {"n": 1}, wait=30)
        print(task.state, task.result)

Every method sends one ``Call`` of ``calls.py`` and returns its typed view, or raises the
exception of the service's error code (``TaskNotFound``, ``InvalidSubmission``, ...; all
``RemoteError``s). ``stream_events`` follows the log as the service appends to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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


class LedgerClient:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(**client_options(url, token, timeout), transport=transport)

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call[T]) -> T:
        """Send one call; its typed result, or the error answer raised."""
        try:
            answer = self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.body,
                timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as error:
            raise ConnectionFailed(f"{call.method} {call.path}: {error}") from error
        return read_answer(call, answer.status_code, answer.content)

    def enqueue(
        self,
        type_name: str,
        args: Mapping[str, Any] | None = None,
        wait: float | None = None,
        **options: Any,
    ) -> TaskView:
        return self.send(calls.enqueue(type_name, args, wait, **options))

    def enqueue_graph(self, tasks: Sequence[Mapping[str, Any]]) -> GraphView:
        return self.send(calls.enqueue_graph(tasks))

    def task(self, task_id: UUID | str) -> TaskView:
        return self.send(calls.get_task(task_id))

    def tasks(self, **filters: Any) -> TaskPage:
        """One page of the task list (``state``, ``type_name``, ``queue``, ``lane``, ``tag``,
        ``since``, ``until``, ``text``, ``limit``, ``cursor``)."""
        return self.send(calls.list_tasks(**filters))

    def history(self, task_id: UUID | str) -> list[EventView]:
        return self.send(calls.history(task_id))

    def cancel(self, task_id: UUID | str, reason: str = "") -> TaskView:
        return self.send(calls.cancel(task_id, reason))

    def retry(self, task_id: UUID | str) -> TaskView:
        return self.send(calls.retry(task_id))

    def signal(self, task_id: UUID | str, name: str, data: Any = None) -> TaskView:
        return self.send(calls.signal(task_id, name, data))

    def events(self, after: int = 0, limit: int | None = None) -> EventPage:
        return self.send(calls.events(after, limit))

    def queues(self) -> list[dict[str, Any]]:
        return self.send(calls.queues())

    def pause_queue(self, name: str) -> dict[str, Any]:
        return self.send(calls.pause_queue(name))

    def resume_queue(self, name: str) -> dict[str, Any]:
        return self.send(calls.resume_queue(name))

    def health(self) -> dict[str, Any]:
        return self.send(calls.health())

    def stream_events(self, after: int | None = None) -> Iterator[EventView]:
        """The log's events after ``after`` (None: from now on), as they are appended; ends
        when the service closes the stream."""
        method, path, params = stream_request(after)
        try:
            with self._http.stream(method, path, params=params, timeout=None) as answer:
                if answer.status_code != 200:
                    read_answer(calls.health(), answer.status_code, answer.read())
                reader = FrameReader()
                for line in answer.iter_lines():
                    event = reader.line(line)
                    if event is not None:
                        yield event
        except httpx.HTTPError as error:
            raise ConnectionFailed(f"{method} {path}: {error}") from error
