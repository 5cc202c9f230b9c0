"""HTTP executor: one request from a URL template, to allowed public hosts only, size-capped.

Settings of a task type whose adapter is ``http``:

- ``url`` (required): ``http://`` or ``https://`` template such as
  ``"https://api.example.com/items/{args.id}?q={args.query}"``. Every filled value is
  percent-encoded (``/ ? # @ :`` included), so an argument cannot change the host or path
  structure.
- ``method`` (default ``GET``); ``headers``: table of header templates (values may not contain
  line breaks); ``json_body`` (default false): send the args as a JSON body. The attempt's
  trace context goes as ``traceparent`` / ``tracestate`` unless these headers are set.
- ``allowed_hosts``: host names (``"api.example.com"`` or ``"*.example.com"``); required unless
  ``allow_any_host = true``.
- ``allow_private`` (default false; only in the deployment's ``[adapters.http]``, never a task
  type's or an ad-hoc task's settings): unless set, the host is resolved and the request refused
  if ANY of its addresses is loopback, private, link-local (169.254.169.254 included),
  shared, reserved, unspecified or multicast (v4 and v6). The request then goes to the very
  address that was checked (Host header and TLS server name keep the host name), so a second
  DNS answer cannot redirect it (no DNS rebinding).
- ``max_response_bytes`` (default 1 MiB): the body is streamed and the request abandoned past
  this size; ``follow_redirects`` (default false; at most 5, each hop checked like the first,
  configured headers dropped when the host changes); ``response_headers``: names of the
  response headers copied into the result.

Result: ``{"status", "headers", "body"}`` (body parsed when the response is JSON), details
``{"http_status"}``. Failures: ``HttpStatus`` (5xx, 408 and 429 retryable; other 4xx not),
``ConnectError``, ``Timeout``, ``TransportError`` (retryable), ``DestinationRefused``,
``ResponseTooLarge``, ``TooManyRedirects``, ``BadRedirect``, ``BadArguments`` (not
retryable). Cancelling ``run()`` aborts the request and closes its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx

from execution_ledger.adapters.executors.base import (
    Executor,
    boolean,
    positive_int,
    refuse_unknown,
    string,
    string_list,
    string_map,
)
from execution_ledger.adapters.executors.templates import (
    ArgumentError,
    check_template,
    fill,
    payload_of,
)
from execution_ledger.adapters.executors.templates import error_class as _error_class
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import Execution, Failure, Success
from execution_ledger.domain.trace_context import with_headers

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
DEFAULT_RESPONSE_HEADERS = ["content-type", "location", "retry-after", "etag", "last-modified"]
MAX_REDIRECTS = 5
BODY_TAIL_CHARS = 4000
KNOWN_SETTINGS = {
    "method",
    "url",
    "headers",
    "json_body",
    "allowed_hosts",
    "allow_any_host",
    "allow_private",
    "max_response_bytes",
    "follow_redirects",
    "response_headers",
}


@dataclass(frozen=True)
class HttpSettings:
    method: str
    url: str
    headers: dict[str, str]
    json_body: bool
    allowed_hosts: tuple[str, ...] | None  # None: any host
    allow_private: bool
    max_response_bytes: int
    follow_redirects: bool
    response_headers: tuple[str, ...]


class Refused(Exception):
    """The destination is not one this task type may reach."""


class TooLarge(Exception):
    """The response body is larger than ``max_response_bytes``."""


class HttpExecutor(Executor[HttpSettings]):
    # Only the deployment's [adapters.http] may let tasks reach non-global addresses (the
    # metadata service, the machine's own ports): no task type or ad-hoc task can.
    deployment_keys = frozenset({"allow_private"})
    name = "http"

    def parse_settings(self, settings: dict[str, Any]) -> HttpSettings:
        refuse_unknown(settings, KNOWN_SETTINGS)
        method = string(settings, "method", "GET").upper()
        if method not in METHODS:
            raise ConfigError(f"must be one of {', '.join(sorted(METHODS))}", ("method",))
        url = string(settings, "url")
        check_template(url, ("url",))
        if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
            raise ConfigError("must start with http:// or https://", ("url",))
        headers = string_map(settings, "headers")
        for name, value in headers.items():
            if name.lower() == "host":
                raise ConfigError("is set from the URL", ("headers", name))
            check_template(value, ("headers", name))
        allowed_hosts: tuple[str, ...] | None = None
        if not boolean(settings, "allow_any_host", False):
            if "allowed_hosts" not in settings:
                raise ConfigError("is required unless allow_any_host = true", ("allowed_hosts",))
            allowed_hosts = tuple(h.lower() for h in string_list(settings, "allowed_hosts", []))
        return HttpSettings(
            method=method,
            url=url,
            headers=headers,
            json_body=boolean(settings, "json_body", False),
            allowed_hosts=allowed_hosts,
            allow_private=boolean(settings, "allow_private", False),
            max_response_bytes=positive_int(
                settings, "max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES
            ),
            follow_redirects=boolean(settings, "follow_redirects", False),
            response_headers=tuple(
                name.lower()
                for name in string_list(settings, "response_headers", DEFAULT_RESPONSE_HEADERS)
            ),
        )

    async def execute(self, settings: HttpSettings, execution: Execution) -> Success | Failure:
        try:
            url = httpx.URL(fill(settings.url, execution.args, quote=_quote, deps=execution.inputs))
            headers = {
                k: fill(v, execution.args, deps=execution.inputs)
                for k, v in settings.headers.items()
            }
            headers = with_headers(headers, execution.trace)  # traceparent, unless set
            if any("\r" in v or "\n" in v for v in headers.values()):
                raise ArgumentError("a header value would contain a line break")
            body = (
                json.dumps(payload_of(execution.args, execution.inputs), allow_nan=False).encode()
                if settings.json_body
                else None
            )
        except (ArgumentError, httpx.InvalidURL, TypeError, ValueError) as exc:
            return Failure(_error_class(exc), str(exc), retryable=False)
        if body is not None and not any(k.lower() == "content-type" for k in headers):
            headers["content-type"] = "application/json"
        timeout = httpx.Timeout(execution.timeouts.start_to_close)
        try:
            async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
                return await _exchange(client, settings, settings.method, url, headers, body)
        except Refused as exc:
            return Failure("DestinationRefused", str(exc), retryable=False)
        except TooLarge as exc:
            return Failure("ResponseTooLarge", str(exc), retryable=False)
        except httpx.ConnectError as exc:
            return Failure("ConnectError", f"cannot connect to {url.host}: {exc}")
        except httpx.TimeoutException as exc:
            return Failure("Timeout", f"{settings.method} {url} timed out: {exc!r}")
        except httpx.HTTPError as exc:
            return Failure("TransportError", f"{settings.method} {url} failed: {exc!r}")


async def _exchange(
    client: httpx.AsyncClient,
    settings: HttpSettings,
    method: str,
    url: httpx.URL,
    headers: dict[str, str],
    body: bytes | None,
) -> Success | Failure:
    """Send the request, following redirects if allowed, and turn the answer into a result."""
    origin = (url.scheme, url.host, url.port)
    for _hop in range(MAX_REDIRECTS + 1):
        addresses = await _checked_addresses(url, settings)
        response = await _send(client, method, url, addresses, headers, body)
        try:
            location = response.headers.get("location")
            if not (settings.follow_redirects and response.is_redirect and location):
                content = await _read_capped(response, settings.max_response_bytes)
                return _result(settings, method, url, response, content)
        finally:
            await response.aclose()
        try:
            url = url.join(location)
        except httpx.InvalidURL as exc:
            return Failure("BadRedirect", f"bad Location {location!r}: {exc}", retryable=False)
        if (url.scheme, url.host, url.port) != origin:
            headers = {k: v for k, v in headers.items() if k.lower() == "content-type"}
        if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
            method, body = "GET", None
    return Failure("TooManyRedirects", f"more than {MAX_REDIRECTS} redirects", retryable=False)


async def _send(
    client: httpx.AsyncClient,
    method: str,
    url: httpx.URL,
    addresses: list[str],
    headers: dict[str, str],
    body: bytes | None,
) -> httpx.Response:
    """Send to the checked addresses in turn until one accepts the connection. The URL names
    the address; the Host header and the TLS server name keep the host name."""

    def pinned(address: str) -> httpx.Request:
        return client.build_request(
            method,
            url.copy_with(host=address),
            headers={**headers, "host": url.netloc.decode("ascii")},
            content=body,
            extensions={"sni_hostname": url.host} if url.scheme == "https" else {},
        )

    *others, last = addresses
    for address in others:
        with contextlib.suppress(httpx.ConnectError):
            return await client.send(pinned(address), stream=True)
    return await client.send(pinned(last), stream=True)


async def _checked_addresses(url: httpx.URL, settings: HttpSettings) -> list[str]:
    """Check ``url``'s host against the settings; return the addresses to connect to."""
    host = url.host
    if url.scheme not in ("http", "https"):
        raise Refused(f"{url}: only http and https are allowed")
    if settings.allowed_hosts is not None and not any(
        host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:]))
        for allowed in settings.allowed_hosts
    ):
        raise Refused(f"{host} is not in allowed_hosts")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, url.port or (443 if url.scheme == "https" else 80), type=socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
    if not settings.allow_private:
        for address in addresses:
            if _is_private(address):
                raise Refused(f"{host} resolves to {address}, a non-public address")
    return list(dict.fromkeys(str(address) for address in addresses))


def _is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for every address but global unicast ones. ``is_global`` is false for loopback,
    private, link-local, shared, reserved, unspecified and documentation ranges."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise TooLarge(f"the response declares {declared} bytes, more than {cap}")
    content = bytearray()
    async for chunk in response.aiter_bytes():
        content += chunk
        if len(content) > cap:
            raise TooLarge(f"the response is larger than {cap} bytes")
    return bytes(content)


def _result(
    settings: HttpSettings, method: str, url: httpx.URL, response: httpx.Response, content: bytes
) -> Success | Failure:
    status = response.status_code
    text = content.decode(response.encoding or "utf-8", errors="replace")
    if status >= 400:
        return Failure(
            "HttpStatus",
            f"{method} {url} answered {status}",
            retryable=status >= 500 or status in (408, 429),
            details={"http_status": status, "body": text[:BODY_TAIL_CHARS]},
        )
    body: Any = text
    if "json" in response.headers.get("content-type", ""):
        with contextlib.suppress(ValueError):
            body = json.loads(content)
    selected = {n: response.headers[n] for n in settings.response_headers if n in response.headers}
    return Success(
        {"status": status, "headers": selected, "body": body}, details={"http_status": status}
    )


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")
