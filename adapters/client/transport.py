"""What the sync and the async client share around httpx: the client's settings (base URL,
bearer token, the ``Host`` header's port, a ``User-Agent`` naming the client), reading an
answer into a call's result or its error, and the event stream's request."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from execution_ledger.adapters.client.calls import Call
from execution_ledger.adapters.client.errors import ConnectionFailed, error_from_answer

T = TypeVar("T")
USER_AGENT = "execution-ledger-client"


def client_options(url: str, token: str | None, timeout: float) -> dict[str, Any]:
    """Keyword arguments of ``httpx.Client`` / ``httpx.AsyncClient`` for a service at
    ``url``; JSON bodies go with ``Content-Type: application/json`` (httpx's ``json=``),
    which the service requires of every body."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the service URL must start with http:// or https://, got {url!r}")
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return {"base_url": url.rstrip("/"), "headers": headers, "timeout": timeout}


def read_answer(call: Call[T], status: int, content: bytes) -> T:
    """The call's result for a 2xx answer; else its error, raised."""
    try:
        body = json.loads(content) if content else None
    except ValueError:
        if 200 <= status < 300:
            raise ConnectionFailed(f"{call.path}: the answer is not JSON") from None
        body = None
    if 200 <= status < 300:
        return call.read(status, body)
    raise error_from_answer(status, body)


def stream_request(after: int | None) -> tuple[str, str, dict[str, str]]:
    params = {} if after is None else {"after": str(after)}
    return "GET", "/v1/events/stream", params
