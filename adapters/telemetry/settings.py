"""Where traces go: the file's ``[telemetry]`` table, checked at load, and the standard
OpenTelemetry environment variables, read when a node starts.

Traces are exported over OTLP only when an endpoint is named: ``endpoint`` in the table, or
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``. The protocol is
HTTP with protobuf bodies (``http/protobuf``, the default) or gRPC (``grpc``): ``protocol``
in the table, or ``OTEL_EXPORTER_OTLP_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``.
``enabled = false`` or ``OTEL_SDK_DISABLED=true`` turns them off whatever else is set.
The environment wins over the file, as ``LEDGER_*`` variables do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from execution_ledger.domain.errors import ConfigError

DEFAULT_SERVICE_NAME = "execution-ledger"
TRACES_PATH = "/v1/traces"
HTTP, GRPC = "http/protobuf", "grpc"
PROTOCOLS = (HTTP, GRPC)  # OTLP's http/json is not offered
_KEYS = ("enabled", "endpoint", "protocol", "service_name", "headers", "sample_ratio")


@dataclass(frozen=True)
class TelemetrySettings:
    """What the exporter needs: where it sends spans (over HTTP, the full URL it posts
    them to; over gRPC, the collector's address), the ``service.name`` they carry, extra
    request headers (an API key), the share of new traces kept, the protocol."""

    traces_url: str
    service_name: str = DEFAULT_SERVICE_NAME
    headers: Mapping[str, str] = field(default_factory=dict)
    sample_ratio: float = 1.0
    protocol: str = HTTP


def telemetry_section(section: Any) -> dict[str, Any]:
    """The ``[telemetry]`` table, checked (``ConfigError`` naming the key)."""
    if not isinstance(section, dict):
        raise ConfigError("expected a table", ("telemetry",))
    for key, value in section.items():
        where = ("telemetry", key)
        if key not in _KEYS:
            raise ConfigError(f"unknown key {key!r} (expected one of: {', '.join(_KEYS)})", where)
        _check(key, value, where)
    return dict(section)


def _check(key: str, value: Any, where: tuple[str, ...]) -> None:
    if key == "enabled" and not isinstance(value, bool):
        raise ConfigError(f"expected true or false, got {value!r}", where)
    if key == "endpoint":
        _check_url(value, where)
    if key == "protocol":
        _check_protocol(value, where)
    if key == "service_name" and (not isinstance(value, str) or not 0 < len(value) <= 200):
        raise ConfigError(f"expected a name of 1 to 200 characters, got {value!r}", where)
    if key == "headers" and not (
        isinstance(value, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        and not any(c in text for text in [*value, *value.values()] for c in "\r\n")
    ):
        raise ConfigError("expected a table of header names to string values", where)
    if key == "sample_ratio" and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1
    ):
        raise ConfigError(f"expected a number from 0 to 1, got {value!r}", where)


def _check_url(value: Any, where: tuple[str, ...]) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        named = f"{where[0]}: " if len(where) == 1 else ""  # an environment variable
        raise ConfigError(f"{named}expected an http:// or https:// URL, got {value!r}", where)
    return str(value)


def _check_protocol(value: Any, where: tuple[str, ...]) -> str:
    if value not in PROTOCOLS:
        named = f"{where[0]}: " if len(where) == 1 else ""  # an environment variable
        json = " (OTLP over HTTP with JSON bodies is not supported)" if value == "http/json" else ""
        raise ConfigError(f"{named}expected {' or '.join(PROTOCOLS)}, got {value!r}{json}", where)
    return str(value)


def telemetry_settings(
    section: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> TelemetrySettings | None:
    """The exporter's settings from the checked table and the environment; None when
    traces are off (no endpoint anywhere, or turned off)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if section.get("enabled") is False:
        return None
    protocol = _protocol(section, env)
    url = _traces_url(section, env, protocol)
    if url is None:
        return None
    return TelemetrySettings(
        traces_url=url,
        service_name=env.get("OTEL_SERVICE_NAME")
        or section.get("service_name")
        or DEFAULT_SERVICE_NAME,
        headers=dict(section.get("headers", {})),
        sample_ratio=float(section.get("sample_ratio", 1.0)),
        protocol=protocol,
    )


def _protocol(section: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The traces' variable, else the general one, else the table's, else HTTP."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if value := env.get(name, "").strip():
            return _check_protocol(value, (name,))
    return str(section.get("protocol", HTTP))


def _traces_url(section: Mapping[str, Any], env: Mapping[str, str], protocol: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as it is; else a base endpoint (the
    variable's, else the table's), with ``/v1/traces`` appended over HTTP (gRPC names a
    service, not a path: the address as it is)."""
    if url := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return _check_url(url, ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",))
    if base := env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        _check_url(base, ("OTEL_EXPORTER_OTLP_ENDPOINT",))
    else:
        base = section.get("endpoint") or ""
    if not base:
        return None
    return base if protocol == GRPC else base.rstrip("/") + TRACES_PATH
