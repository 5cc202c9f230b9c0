"""The HTTP executor sends one request to an allowed public host and caps the response."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from execution_ledger.adapters.executors.http import HttpExecutor
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import Failure, Success

http = HttpExecutor()
# The deployment's [adapters.http] allow_private: the test servers listen on loopback.
local_http = HttpExecutor({"allow_private": True})

# A subprocess, connection or future left behind by a cancelled run fails the test.
pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)


@dataclass
class Server:
    url: str
    hits: list[str] = field(default_factory=list)

    def settings(self, path: str, **more: object) -> dict[str, object]:
        """Settings reaching this test server on 127.0.0.1 (a private address)."""
        return {
            "url": self.url + path,
            "allowed_hosts": ["127.0.0.1"],
            **more,
        }


async def _json(request: web.Request) -> web.Response:
    return web.json_response({"hello": "world"})


async def _raw(request: web.Request) -> web.Response:
    return web.json_response({"raw_path": request.raw_path, "host": request.host})


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(
        {"body": await request.json(), "trace": request.headers.get("X-Trace")}
    )


async def _not_quite_json(request: web.Request) -> web.Response:
    return web.Response(text='{"v": NaN, "w": [-Infinity], "s": "a\\u0000b"}', content_type="application/json")


async def _status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), text="status body")


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.query["to"])


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * 2 * 2**20)


async def _big_chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        for _ in range(32):
            await response.write(b"x" * 64 * 1024)
    except ConnectionError:
        pass  # the client stopped reading, as it should
    return response


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    hits: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        hits.append(request.path)
        return await handler(request)

    app = web.Application(middlewares=[record])
    app.add_routes(
        [
            web.get("/json", _json),
            web.get("/not-quite-json", _not_quite_json),
            web.get("/raw/{tail:.*}", _raw),
            web.post("/echo", _echo),
            web.get("/status/{code}", _status),
            web.get("/redirect", _redirect),
            web.get("/big", _big),
            web.get("/big-chunked", _big_chunked),
        ]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield Server(f"http://{host}:{port}", hits)
    await runner.cleanup()


@pytest.mark.asyncio
async def test_a_json_response_is_returned_parsed_with_its_status(execution, server) -> None:
    result = await local_http.run(execution(server.settings("/json")))

    assert result == Success(
        {
            "status": 200,
            "headers": {"content-type": "application/json; charset=utf-8"},
            "body": {"hello": "world"},
        },
        details={"http_status": 200},
    )


@pytest.mark.asyncio
async def test_a_json_body_with_values_postgres_cannot_store_is_returned_storable(
    execution, server
) -> None:
    """A NaN, an infinity (which Python's reader takes) and a NUL: the result holds them as
    text the log and the task view can store (``domain/storable.py``)."""
    result = await local_http.run(execution(server.settings("/not-quite-json")))
    assert isinstance(result, Success)
    assert result.result["body"] == {"v": "NaN", "w": ["-Infinity"], "s": "a\ufffdb"}


@pytest.mark.asyncio
async def test_args_are_percent_encoded_so_they_cannot_change_the_host_or_path(
    execution, server
) -> None:
    settings = server.settings("/raw/{args.name}?q={args.q}")
    args = {"name": "../x@evil.example/#frag", "q": "a&b=c"}

    result = await local_http.run(execution(settings, args))

    assert isinstance(result, Success)
    assert result.result["body"] == {
        "raw_path": "/raw/..%2Fx%40evil.example%2F%23frag?q=a%26b%3Dc",
        "host": server.url.removeprefix("http://"),
    }


@pytest.mark.asyncio
async def test_json_body_sends_the_args_and_header_templates_are_filled(execution, server) -> None:
    settings = server.settings(
        "/echo", method="POST", json_body=True, headers={"X-Trace": "trace-{args.id}"}
    )

    result = await local_http.run(execution(settings, {"id": 7, "items": [1, 2]}))

    assert isinstance(result, Success)
    assert result.result["body"] == {"body": {"id": 7, "items": [1, 2]}, "trace": "trace-7"}


@pytest.mark.asyncio
async def test_an_argument_cannot_add_a_header_line(execution, server) -> None:
    settings = server.settings("/json", headers={"X-Trace": "{args.id}"})

    result = await local_http.run(execution(settings, {"id": "1\r\nX-Admin: yes"}))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("BadArguments", False)
    assert server.hits == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "retryable"), [(404, False), (408, True), (429, True), (500, True), (503, True)]
)
async def test_an_error_status_is_an_http_status_failure(
    execution, server, status: int, retryable: bool
) -> None:
    result = await local_http.run(execution(server.settings(f"/status/{status}")))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("HttpStatus", retryable)
    assert result.details == {"http_status": status, "body": "status body"}


@pytest.mark.asyncio
async def test_a_refused_connection_is_a_retryable_connect_error(execution) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = {"url": f"http://127.0.0.1:{port}/", "allow_any_host": True}

    result = await local_http.run(execution(settings))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("ConnectError", True)


_connecting: list[list[Any]] = []  # while a test records: the addresses connected to
_hook_added: list[bool] = []


def _watch_connects(event: str, args: tuple[Any, ...]) -> None:
    """An audit hook (they cannot be removed, so it is added once and idles otherwise):
    records every socket connect while a test records, and stops one to a non-loopback
    address before it is made (nothing may leave this machine)."""
    if event != "socket.connect" or not _connecting:
        return
    address = args[1]
    _connecting[-1].append(address)
    host = address[0] if isinstance(address, tuple) else ""
    if host and not ipaddress.ip_address(host.split("%")[0]).is_loopback:
        raise PermissionError(f"test: connecting to {host} is not allowed")


@pytest.fixture
def connects() -> Iterator[list[Any]]:
    """The addresses this process tries to connect to during the test."""
    if not _hook_added:
        sys.addaudithook(_watch_connects)
        _hook_added.append(True)
    attempts: list[Any] = []
    _connecting.append(attempts)
    yield attempts
    _connecting.remove(attempts)


@pytest.mark.asyncio
async def test_the_cloud_metadata_address_is_refused_before_any_connection(
    execution, connects
) -> None:
    settings = {"url": "http://169.254.169.254/latest/meta-data/", "allow_any_host": True}

    result = await http.run(execution(settings))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("DestinationRefused", False)
    assert connects == []  # refused by its address, with no connection tried


@pytest.mark.asyncio
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "[::ffff:127.0.0.1]"])
async def test_loopback_destinations_are_refused_unless_private_is_allowed(
    execution, server, host: str
) -> None:
    port = server.url.rsplit(":", 1)[1]
    settings = {"url": f"http://{host}:{port}/json", "allow_any_host": True}

    result = await http.run(execution(settings))

    assert isinstance(result, Failure)
    assert result.error_class == "DestinationRefused"
    assert server.hits == []


@pytest.mark.asyncio
async def test_a_host_name_keeps_its_host_header_when_sent_to_the_checked_address(
    execution, server
) -> None:
    port = server.url.rsplit(":", 1)[1]
    settings = {
        "url": f"http://localhost:{port}/raw/x",
        "allowed_hosts": ["localhost"],
    }

    result = await local_http.run(execution(settings))

    assert isinstance(result, Success)
    assert result.result["body"]["host"] == f"localhost:{port}"


@pytest.mark.asyncio
async def test_a_host_outside_the_allow_list_is_refused(execution, server) -> None:
    settings = server.settings("/json", allowed_hosts=["api.example.com", "*.example.org"])

    result = await local_http.run(execution(settings))

    assert isinstance(result, Failure)
    assert result.error_class == "DestinationRefused"
    assert "allowed_hosts" in result.message


@pytest.mark.asyncio
async def test_a_redirect_is_not_followed_by_default(execution, server) -> None:
    settings = server.settings("/redirect?to=/json")

    result = await local_http.run(execution(settings))

    assert isinstance(result, Success)
    assert result.result["status"] == 302
    assert result.result["headers"]["location"] == "/json"
    assert server.hits == ["/redirect"]


@pytest.mark.asyncio
async def test_a_followed_redirect_to_an_allowed_host_is_fetched(execution, server) -> None:
    settings = server.settings("/redirect?to=/json", follow_redirects=True)

    result = await local_http.run(execution(settings))

    assert isinstance(result, Success)
    assert result.result["body"] == {"hello": "world"}
    assert server.hits == ["/redirect", "/json"]


@pytest.mark.asyncio
async def test_a_redirect_to_a_refused_host_is_not_followed(execution, server) -> None:
    settings = server.settings(
        "/redirect?to=http://169.254.169.254/latest/meta-data/", follow_redirects=True
    )

    result = await local_http.run(execution(settings))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("DestinationRefused", False)
    assert "169.254.169.254" in result.message


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_an_oversized_response_is_response_too_large(execution, server, path) -> None:
    result = await local_http.run(execution(server.settings(path, max_response_bytes=100_000)))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("ResponseTooLarge", False)


@pytest.mark.asyncio
async def test_cancellation_aborts_the_request_and_closes_the_connection(execution) -> None:
    received, closed = asyncio.Event(), asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        received.set()
        await reader.read()  # returns once the client has closed the connection
        closed.set()
        writer.close()

    listener = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    settings = {
        "url": f"http://127.0.0.1:{port}/slow",
        "allowed_hosts": ["127.0.0.1"],
    }
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(local_http.run(execution(settings, start_to_close=30)), 0.5)

        assert received.is_set()
        await asyncio.wait_for(closed.wait(), 1)
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ({"allowed_hosts": ["a.example"]}, ("url",)),
        ({"url": "ftp://a.example/", "allowed_hosts": ["a.example"]}, ("url",)),
        ({"url": "https://a.example/{0}", "allowed_hosts": ["a.example"]}, ("url",)),
        ({"url": "https://a.example/"}, ("allowed_hosts",)),
        ({"url": "https://a.example/", "allowed_hosts": "a.example"}, ("allowed_hosts",)),
        ({"url": "https://a.example/", "allow_any_host": True, "method": "BREW"}, ("method",)),
        (
            {"url": "https://a.example/", "allow_any_host": True, "headers": {"Host": "b"}},
            ("headers", "Host"),
        ),
        (
            {"url": "https://a.example/", "allow_any_host": True, "max_response_bytes": 0},
            ("max_response_bytes",),
        ),
        ({"url": "https://a.example/", "allow_any_host": True, "verify": False}, ("verify",)),
    ],
)
def test_check_settings_refuses_bad_settings(settings: dict, where: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as refused:
        http.check_settings(settings)

    assert refused.value.where == where


def test_check_settings_accepts_good_settings_as_written() -> None:
    settings = {
        "url": "https://api.example.com/items/{args.id}",
        "allowed_hosts": ["API.example.com"],
        "method": "post",
        "json_body": True,
        "headers": {"Authorization": "Bearer x"},
    }

    assert http.check_settings(settings) is None  # accepted: no ConfigError
    parsed = http.parse_settings(settings)
    assert (parsed.method, parsed.url, parsed.allowed_hosts) == (
        "POST",
        "https://api.example.com/items/{args.id}",
        ("api.example.com",),
    )
    assert (parsed.json_body, parsed.headers, parsed.allow_private) == (
        True,
        {"Authorization": "Bearer x"},
        False,
    )


@pytest.mark.asyncio
async def test_a_task_cannot_allow_itself_private_addresses(execution, connects) -> None:
    """Only the deployment's [adapters.http] may allow private addresses: an ad-hoc task or
    a task type that sets allow_private is refused, and nothing is contacted."""
    settings = {
        "url": "http://169.254.169.254/latest/meta-data/",
        "allow_any_host": True,
        "allow_private": True,
    }

    with pytest.raises(ConfigError) as refused:
        http.check_settings(settings)
    result = await http.run(execution(settings))

    assert refused.value.where == ("allow_private",)
    assert "[adapters.http]" in refused.value.reason
    assert isinstance(result, Failure) and result.error_class == "BadSettings"
    assert connects == []
