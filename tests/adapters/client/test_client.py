"""``LedgerClient`` and ``AsyncLedgerClient`` against a live ledger API on real PostgreSQL:
typed results, ``?wait``, the event stream, and the service's refusals as the domain's own
exceptions."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from execution_ledger.adapters.client import (
    AsyncLedgerClient,
    ConnectionFailed,
    LedgerClient,
    RemoteError,
    ServiceError,
    TaskView,
)
from execution_ledger.domain.errors import (
    Forbidden,
    InvalidQuery,
    InvalidSubmission,
    InvalidTransition,
    TaskNotFound,
)
from tests.adapters.http.live_server import TOKENS, LiveServer


def test_enqueue_returns_the_stored_task_typed(server: LiveServer) -> None:
    with LedgerClient(server.url) as ledger:
        task = ledger.enqueue("echo", {"n": 1}, priority=5, tags=["a"])
        assert isinstance(task, TaskView) and task.created
        assert (task.type, task.state, task.priority, dict(task.args)) == (
            "echo",
            "ready",
            5,
            {"n": 1},
        )
        assert isinstance(task.id, uuid.UUID) and task.enqueued_at is not None
        assert ledger.task(task.id).id == task.id
        assert ledger.task(str(task.id)).raw["tags"] == ["a"]


def test_an_idempotency_keys_holder_comes_back_not_created(server: LiveServer) -> None:
    with LedgerClient(server.url) as ledger:
        first = ledger.enqueue("echo", {"n": 1}, idempotency_key="k-1")
        again = ledger.enqueue("echo", {"n": 2}, idempotency_key="k-1")
    assert first.created and not again.created and again.id == first.id


def test_wait_returns_the_ended_task_with_its_result(worker_server: LiveServer) -> None:
    with LedgerClient(worker_server.url) as ledger:
        task = ledger.enqueue("echo", {"n": 7}, wait=30)
    assert task.is_terminal and task.state == "succeeded"
    assert task.result == {"n": 7}


def test_a_scheduled_task_and_the_list_filters(server: LiveServer) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    with LedgerClient(server.url) as ledger:
        task = ledger.enqueue("echo", {}, run_at=later)
        assert task.state == "scheduled"
        history = ledger.history(task.id)
        assert [e.type for e in history] == ["TaskEnqueued"]
        assert history[0].aggregate_id == task.id
        cancelled = ledger.cancel(task.id, reason="not needed")
        assert cancelled.state == "cancelled"


def test_the_services_refusals_are_the_domains_exceptions(server: LiveServer) -> None:
    with LedgerClient(server.url) as ledger:
        with pytest.raises(TaskNotFound) as missing:
            ledger.task(uuid.uuid4())
        assert isinstance(missing.value, RemoteError)
        assert (missing.value.status, missing.value.code) == (404, "task_not_found")
        with pytest.raises(InvalidSubmission) as unknown:
            ledger.enqueue("no-such-type")
        assert unknown.value.status == 422 and "no-such-type" in str(unknown.value)
        with pytest.raises(InvalidQuery):
            ledger.tasks(state="bogus")
        done = ledger.enqueue("echo", {})
        ledger.cancel(done.id)
        with pytest.raises(InvalidTransition) as again:
            ledger.cancel(done.id)
        assert again.value.status == 409


def test_a_principal_without_the_right_is_refused(secured_server: LiveServer) -> None:
    with LedgerClient(secured_server.url, token=TOKENS["critic"]) as critic:
        task = critic.enqueue("echo", {})
        with pytest.raises(Forbidden) as refused:
            critic.cancel(task.id)
        assert refused.value.status == 403
    with LedgerClient(secured_server.url) as anonymous, pytest.raises(ServiceError) as no_token:
        anonymous.queues()
    assert no_token.value.status == 401


def test_an_unreachable_service_is_a_connection_failure() -> None:
    with LedgerClient("http://127.0.0.1:9", timeout=2) as ledger, pytest.raises(ConnectionFailed):
        ledger.health()


def test_a_url_without_a_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="http://"):
        LedgerClient("127.0.0.1:8080")


def test_a_graph_and_a_page_of_tasks(server: LiveServer) -> None:
    with LedgerClient(server.url) as ledger:
        graph = ledger.enqueue_graph(
            [{"ref": "a", "type": "echo"}, {"ref": "b", "type": "echo", "depends_on": ["a"]}]
        )
        assert set(graph.tasks) == {"a", "b"}
        blocked = ledger.task(graph.tasks["b"])
        assert blocked.state == "blocked"


def test_the_event_stream_follows_the_log(server: LiveServer) -> None:
    with LedgerClient(server.url) as ledger:
        first = ledger.enqueue("echo", {"n": 1})
        stream = ledger.stream_events(after=0)
        event = next(stream)
        assert (event.type, event.aggregate_id) == ("TaskEnqueued", first.id)
        second = ledger.enqueue("echo", {"n": 2})  # appended while the stream is open
        later = next(e for e in stream if e.type == "TaskEnqueued")
        assert later.aggregate_id == second.id and later.position > event.position
        stream.close()
        page = ledger.events(after=0)
        assert [e.aggregate_id for e in page.events if e.type == "TaskEnqueued"][:2] == [
            first.id,
            second.id,
        ]


def test_the_async_client_gives_the_same_results(worker_server: LiveServer) -> None:
    async def scenario() -> None:
        async with AsyncLedgerClient(worker_server.url) as ledger:
            tasks = await asyncio.gather(*(ledger.enqueue("echo", {"n": n}) for n in range(5)))
            assert all(t.created for t in tasks)
            ended = await ledger.enqueue("echo", {"n": 9}, wait=30)
            assert ended.state == "succeeded" and ended.result == {"n": 9}
            with pytest.raises(TaskNotFound):
                await ledger.task(uuid.uuid4())
            seen = []
            async for event in ledger.stream_events(after=0):
                seen.append(event)
                if len(seen) == 3:
                    break
            assert [e.position for e in seen] == sorted(e.position for e in seen)

    asyncio.run(scenario())


class _ProxyPage(BaseHTTPRequestHandler):
    """A server that is not the ledger: an HTML page for every request."""

    def do_GET(self) -> None:
        body = b"<html>a proxy page</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_an_answer_that_is_not_the_services_is_a_connection_failure() -> None:
    other = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyPage)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{other.server_address[1]}"
        with LedgerClient(url) as ledger, pytest.raises(ConnectionFailed, match="not JSON"):
            ledger.health()
    finally:
        other.shutdown()
