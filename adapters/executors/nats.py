"""NATS executor: send a task to an external handler by request-reply, or publish it to
JetStream and succeed on the stream's ack.

Settings of a task type whose adapter is ``nats``:

- ``subject`` (required): a subject template such as ``"billing.invoice.{args.country}"``.
  A filled value must be one plain token (no ``.``, ``*``, ``>``, spaces or control
  characters), so an argument can neither add tokens nor turn the subject into a wildcard.
- ``mode``: ``"request"`` (default) sends a request and waits for one reply;
  ``"jetstream"`` publishes to JetStream and waits for the ack. Either sends the attempt's
  trace context as ``traceparent`` / ``tracestate`` headers when it has one.
- ``url``: the NATS server (e.g. ``"nats://127.0.0.1:4222"``), or a cluster's servers
  comma-separated; default ``LEDGER_NATS_URL`` at run time. Settings are checked without
  connecting.
- ``timeout``: seconds to wait (connection included); never more than the task's
  ``start_to_close``, which is the default.
- ``payload``: ``"args"`` (default) sends the args as a JSON object; ``"empty"`` sends
  nothing.
- ``stream`` (jetstream only): the stream the subject must land in; a publish captured by
  another stream fails.

Results: request mode succeeds with the reply, parsed when it is JSON, else as text
(details ``{"reply_bytes"}``); a reply carrying the ``Nats-Service-Error`` header (NATS
micro services) is a ``ServiceError`` failure, retryable for codes of 500 and up. JetStream
mode succeeds with ``{"stream", "seq", "duplicate"}``; its ``Nats-Msg-Id`` is the task id, so
an attempt repeated after a lost ack is recognised by the stream as a duplicate and not
stored twice. Failures: ``NoResponders`` (no subscriber, or no stream for the subject),
``Timeout``, ``ConnectError`` (retryable); ``JetStreamError`` (retryable for 5xx);
``NoServer``, ``BadArguments``, ``PayloadTooLarge`` (not retryable). Cancelling ``run()``
closes the connection; a request's late reply is then dropped by the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors

from execution_ledger.adapters.executors.base import Executor, refuse_unknown, string
from execution_ledger.adapters.executors.templates import (
    ArgumentError,
    check_template,
    fill,
    payload_of,
)
from execution_ledger.adapters.executors.templates import error_class as _error_class
from execution_ledger.adapters.nats.connection import parse_servers, redact
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import Execution, Failure, Success

MODES = ("request", "jetstream")
PAYLOADS = ("args", "empty")
KNOWN_SETTINGS = {"subject", "mode", "url", "timeout", "payload", "stream"}
SERVICE_ERROR = "Nats-Service-Error"
SERVICE_ERROR_CODE = "Nats-Service-Error-Code"
MSG_ID = "Nats-Msg-Id"
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class NatsTaskSettings:
    subject: str
    mode: str
    url: str | None
    timeout: float | None
    payload: str
    stream: str | None


class NatsExecutor(Executor[NatsTaskSettings]):
    name = "nats"

    def parse_settings(self, settings: dict[str, Any]) -> NatsTaskSettings:
        refuse_unknown(settings, KNOWN_SETTINGS)
        subject = string(settings, "subject")
        check_template(subject, ("subject",))
        try:
            check_subject(fill(subject, _Placeholder(), quote=lambda _: "x", deps=_Placeholder()))
        except (ArgumentError, ValueError) as exc:
            raise ConfigError(str(exc), ("subject",)) from None
        mode = string(settings, "mode", "request")
        if mode not in MODES:
            raise ConfigError(f"must be one of {', '.join(MODES)}", ("mode",))
        payload = string(settings, "payload", "args")
        if payload not in PAYLOADS:
            raise ConfigError(f"must be one of {', '.join(PAYLOADS)}", ("payload",))
        url = settings.get("url")
        if url is not None:
            url = string(settings, "url")
        timeout = settings.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
        ):
            raise ConfigError(f"must be positive seconds, got {timeout!r}", ("timeout",))
        stream = settings.get("stream")
        if stream is not None:
            stream = string(settings, "stream")
            if mode != "jetstream":
                raise ConfigError('applies to mode = "jetstream" only', ("stream",))
        return NatsTaskSettings(
            subject=subject,
            mode=mode,
            url=url,
            timeout=None if timeout is None else float(timeout),
            payload=payload,
            stream=stream,
        )

    async def execute(self, settings: NatsTaskSettings, execution: Execution) -> Success | Failure:
        try:
            subject = fill(settings.subject, execution.args, quote=_token, deps=execution.inputs)
            check_subject(subject)
            payload = (
                json.dumps(payload_of(execution.args, execution.inputs), allow_nan=False).encode()
                if settings.payload == "args"
                else b""
            )
        except (ArgumentError, TypeError, ValueError) as exc:
            return Failure(_error_class(exc), str(exc), retryable=False)
        url = settings.url or os.environ.get("LEDGER_NATS_URL")
        if not url:
            return Failure(
                "NoServer", "no NATS URL: set the url setting or LEDGER_NATS_URL", retryable=False
            )
        try:
            servers = list(parse_servers(url, ("url",)))  # one URL or a comma-separated list
        except ConfigError as exc:
            return Failure("NoServer", exc.reason, retryable=False)
        limit = execution.timeouts.start_to_close
        seconds = min(settings.timeout, limit) if settings.timeout is not None else limit
        deadline = time.monotonic() + seconds
        try:
            # One attempt (the client's own loop would retry a refused connection forever).
            nc = await asyncio.wait_for(
                nats.connect(
                    servers,
                    name=f"ledger-task-{execution.task_id}",
                    connect_timeout=min(CONNECT_TIMEOUT, seconds),
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.05,
                    error_cb=_ignore,
                ),
                min(CONNECT_TIMEOUT, seconds),
            )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            reason = redact(f"cannot connect to NATS at {url}: {exc!r}")
            return Failure("ConnectError", reason)
        try:
            left = max(deadline - time.monotonic(), 0.001)
            if len(payload) > nc.max_payload:
                return Failure(
                    "PayloadTooLarge",
                    f"the payload is {len(payload)} bytes, the server allows {nc.max_payload}",
                    retryable=False,
                )
            if settings.mode == "request":
                return await _request(nc, subject, payload, left, dict(execution.trace or {}))
            return await _publish(nc, subject, payload, left, settings.stream, execution)
        finally:
            await nc.close()


async def _request(
    nc: Any, subject: str, payload: bytes, timeout: float, headers: dict[str, str]
) -> Success | Failure:
    try:
        reply = await nc.request(subject, payload, timeout=timeout, headers=headers or None)
    except nats.errors.NoRespondersError:
        return Failure("NoResponders", f"no handler subscribes to {subject}")
    except nats.errors.TimeoutError:
        return Failure("Timeout", f"no reply on {subject} within {timeout:.3g} s")
    except nats.errors.MaxPayloadError as exc:
        return Failure("PayloadTooLarge", str(exc), retryable=False)
    except nats.errors.Error as exc:
        return Failure("NatsError", f"request on {subject} failed: {exc!r}")
    headers = reply.headers or {}
    if SERVICE_ERROR in headers:
        code = headers.get(SERVICE_ERROR_CODE, "")
        status = int(code) if code.isdigit() else 500
        return Failure(
            "ServiceError",
            f"{subject} answered an error {code}: {headers[SERVICE_ERROR]}",
            retryable=status >= 500,
            details={"service_error_code": status, "body": _decoded(reply.data)},
        )
    return Success(_decoded(reply.data), details={"reply_bytes": len(reply.data)})


async def _publish(
    nc: Any,
    subject: str,
    payload: bytes,
    timeout: float,
    stream: str | None,
    execution: Execution,
) -> Success | Failure:
    js = nc.jetstream(timeout=timeout)
    try:
        ack = await js.publish(
            subject,
            payload,
            timeout=timeout,
            stream=stream,
            headers={**(execution.trace or {}), MSG_ID: str(execution.task_id)},
        )
    except nats.js.errors.NoStreamResponseError:
        return Failure("NoResponders", f"no JetStream stream captures {subject}")
    except nats.errors.TimeoutError:
        return Failure("Timeout", f"no JetStream ack for {subject} within {timeout:.3g} s")
    except nats.js.errors.APIError as exc:
        status = exc.code or 500
        return Failure(
            "JetStreamError",
            f"publish to {subject} refused: {exc.description or exc}",
            retryable=status >= 500,
            details={"jetstream_code": status, "jetstream_err_code": exc.err_code},
        )
    except nats.errors.MaxPayloadError as exc:
        return Failure("PayloadTooLarge", str(exc), retryable=False)
    except nats.errors.Error as exc:
        return Failure("NatsError", f"publish to {subject} failed: {exc!r}")
    return Success({"stream": ack.stream, "seq": ack.seq, "duplicate": bool(ack.duplicate)})


def check_subject(subject: str) -> None:
    """Raise ``ValueError`` unless ``subject`` is a publishable subject (no wildcards)."""
    tokens = subject.split(".")
    for token in tokens:
        if not token or token in ("*", ">") or not _plain(token):
            raise ValueError(f"{subject!r} is not a valid subject to publish to")


def _token(value: str) -> str:
    if not value or "." in value or not _plain(value) or value in ("*", ">"):
        raise ArgumentError(f"{value!r} cannot be a subject token")
    return value


def _plain(text: str) -> bool:
    return not any(
        ch.isspace() or unicodedata.category(ch).startswith("C") or ch in "*>" for ch in text
    )


def _decoded(data: bytes) -> Any:
    text = data.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _ignore(error: Exception) -> None:
    """The client's error callback: failures are returned as results instead."""


class _Placeholder(dict[str, Any]):
    """Args in which every key exists and is a plain token: checks a template's shape."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> Any:
        return _Placeholder()
