"""Browser-facing rules: what a web page the user happens to open may make the server do.

A page on any site can make the browser send requests to ``localhost:8080``: simple POSTs
(``text/plain``, no preflight) from its own origin, or, after pointing its own DNS name at
127.0.0.1 (DNS rebinding), any request as if it were same-origin. With no principals every
request acts as the local admin, so:

- ``host_guard`` (before authentication): a ``Host`` header that names neither this server
  (``localhost``, ``127.0.0.1``, ``[::1]``, the address the client connected to, the host
  it was told to listen on; with the port it listens on) nor a name of ``[http]
  allowed_hosts`` is refused with 421, before anything else happens. It also answers CORS
  preflights (``OPTIONS``) from the origins of ``[http] allowed_origins``.
- ``origin_guard`` (after authentication, so the denial names the principal): a request
  that may change state (POST, PUT, PATCH, DELETE) carrying an ``Origin`` that is neither
  the server's own nor one of ``[http] allowed_origins`` is refused with 403 and recorded
  as an ``AccessDenied`` event.
- ``add_cors_headers``: ``Access-Control-Allow-Origin`` only for the configured origins;
  none at all when there are none.

Bodies must also be labelled ``application/json`` (415, ``bodies.read_json``).
"""

from __future__ import annotations

import functools
import ipaddress
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import hdrs, web

from execution_ledger.adapters.http.errors import HttpError
from execution_ledger.adapters.http.limits import HttpLimits

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Middleware(Protocol):
    """An aiohttp middleware (aiohttp passes ``request`` and ``handler`` by name)."""

    def __call__(
        self, request: web.Request, handler: Handler
    ) -> Awaitable[web.StreamResponse]: ...


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}
CORS_ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE"
CORS_ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
CORS_EXPOSE_HEADERS = "Location, Retry-After, WWW-Authenticate"
CORS_MAX_AGE = "600"


@functools.lru_cache(maxsize=256)  # every request's Host header: a handful of values
def split_host(text: str) -> tuple[str, int | None]:
    """``("example.com", 8080)`` from ``"example.com:8080"`` (IPv6 in brackets); the name
    lower-cased without a final dot. ``ValueError`` when it is not a host[:port]."""
    value = text.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        ok = bool(bracket) and (not rest or rest.startswith(":"))
        port_text = rest[1:] if rest else None
    else:
        name, colon, after = value.partition(":")
        ok, port_text = True, (after if colon else None)
    name = name.rstrip(".")
    ok = ok and bool(name) and not any(c in name for c in "/\\@?#[]* \t")
    if ok and port_text is not None:
        ok = port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536
    if not ok:
        raise ValueError(
            f"{text!r} is not a host name with an optional :port "
            "(e.g. ledger.example.com or ledger.example.com:8443)"
        )
    return name, int(port_text) if port_text is not None else None


def normalize_origin(text: str) -> str:
    """``scheme://host[:port]`` (lower case, default port left out) of an ``Origin`` value or
    a configured origin; ``ValueError`` for anything else (``null``, paths, user names)."""
    refused = ValueError(
        f"{text!r} is not an origin: http:// or https:// and a host with an optional :port, "
        "nothing after it (e.g. https://app.example.com)"
    )
    parts = urllib.parse.urlsplit(text.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or parts.path not in ("", "/") or parts.query:
        raise refused
    if parts.fragment or "@" in parts.netloc:
        raise refused
    try:
        name, port = split_host(parts.netloc)
    except ValueError:
        raise refused from None
    shown = f"[{name}]" if ":" in name else name
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{shown}"
    return f"{scheme}://{shown}:{port}"


@dataclass(frozen=True)
class BrowserRules:
    """The ``Host`` names and origins this server answers, beyond its own."""

    allowed_hosts: frozenset[tuple[str, int | None]] = frozenset()
    allowed_origins: frozenset[str] = frozenset()
    listen_host: str | None = None

    @classmethod
    def of(cls, limits: HttpLimits, listen_host: str | None = None) -> BrowserRules:
        return cls(
            allowed_hosts=frozenset(split_host(h) for h in limits.allowed_hosts),
            allowed_origins=frozenset(normalize_origin(o) for o in limits.allowed_origins),
            listen_host=listen_host.strip("[]").lower() if listen_host else None,
        )

    def host_allowed(self, host: str, local: tuple[str, int] | None) -> bool:
        """True if the ``Host`` header names this server (``local``: the address the client
        connected to) or a configured name (with any port, or the one configured)."""
        try:
            name, port = split_host(host)
        except ValueError:
            return False
        if (name, None) in self.allowed_hosts or (name, port) in self.allowed_hosts:
            return True
        if local is None:
            return False
        ours = LOOPBACK_NAMES | _address_names(local[0])
        if self.listen_host:
            ours |= {self.listen_host}
        return name in ours and (port == local[1] or (port is None and local[1] == 80))

    def origin_allowed(self, origin: str, host: str) -> bool:
        """True for a configured origin, or the server's own (the origin's host and port
        are the ones the request's ``Host`` names, over http or https)."""
        try:
            normalized = normalize_origin(origin)
        except ValueError:
            return False  # "null" (sandboxed pages, files) and the like
        if normalized in self.allowed_origins:
            return True
        parts = urllib.parse.urlsplit(normalized)
        try:
            name, port = split_host(host)
        except ValueError:
            return False
        default = DEFAULT_PORTS[parts.scheme]
        own_name, own_port = split_host(parts.netloc)
        return own_name == name and (own_port or default) == (port or default)


@functools.lru_cache(maxsize=64)  # the server's own addresses: parsed once, not per request
def _address_names(address: str) -> frozenset[str]:
    """The names a client may use for the local address it connected to."""
    names = {address.lower().split("%", 1)[0]}
    try:
        ip = ipaddress.ip_address(next(iter(names)))
    except ValueError:
        return frozenset(names)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        names.add(str(ip.ipv4_mapped))
    return frozenset(names)


def misdirected(host: str | None) -> HttpError:
    named = f"Host {host[:200]!r}" if host else "no Host header"
    return HttpError(
        421,
        "misdirected_request",
        f"this server does not answer to {named} (a page's DNS name pointed at this machine "
        "is refused); a name it is reached by must be listed in [http] allowed_hosts",
    )


def cross_origin(origin: str) -> HttpError:
    return HttpError(
        403,
        "cross_origin_refused",
        f"a request from the origin {origin[:200]!r} may not change anything here (only the "
        "server's own origin and those of [http] allowed_origins may)",
    )


def _local_address(request: web.Request) -> tuple[str, int] | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return str(sockname[0]), int(sockname[1])
    return None


def host_guard(rules: BrowserRules) -> Middleware:
    """421 for a ``Host`` that does not name this server; answers allowed CORS preflights."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get(hdrs.HOST)
        if host is None or not rules.host_allowed(host, _local_address(request)):
            raise misdirected(host)
        origin = request.headers.get(hdrs.ORIGIN)
        if request.method == "OPTIONS" and origin is not None and _configured(rules, origin):
            return web.Response(status=204, headers=_preflight_headers(origin))
        return await handler(request)

    return guard


def origin_guard(rules: BrowserRules) -> Middleware:
    """403 (a recorded denial) for a state-changing request from a foreign origin."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        host = request.headers.get(hdrs.HOST, "")
        changes = request.method in STATE_CHANGING
        if origin is not None and changes and not rules.origin_allowed(origin, host):
            raise cross_origin(origin)
        return await handler(request)

    return guard


def _configured(rules: BrowserRules, origin: str) -> bool:
    try:
        return normalize_origin(origin) in rules.allowed_origins
    except ValueError:
        return False


def _preflight_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
        "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
        "Access-Control-Max-Age": CORS_MAX_AGE,
        "Vary": "Origin",
    }


def cors_headers(
    rules: BrowserRules,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` hook: CORS headers on answers to configured origins only."""

    async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or not rules.allowed_origins or not _configured(rules, origin):
            return
        if "Access-Control-Allow-Origin" not in response.headers:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
            response.headers.add("Vary", "Origin")

    return add_cors_headers
