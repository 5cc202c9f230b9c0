"""Loading the central registry from a TOML file, with errors that name file, line and reason.

With no file, the built-in demo registry (``adapters/default_registry.toml``) is used.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from execution_ledger.adapters.telemetry.settings import telemetry_section
from execution_ledger.domain.durations import parse_duration
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.registry import Registry, build_registry
from execution_ledger.domain.registry_document import registry_document
from execution_ledger.domain.retention import RetentionPolicy, build_retention

DEFAULT_REGISTRY = Path(__file__).with_name("default_registry.toml")


class ConfigFileError(ConfigError):
    """An invalid configuration file; the message reads ``FILE:LINE: reason``."""

    def __init__(self, source: str, line: int | None, reason: str, where: tuple[str, ...] = ()):
        at = f" (at {'.'.join(where)})" if where else ""
        super().__init__(f"{source}:{line if line is not None else '?'}: {reason}{at}", where)
        self.source = source
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class LoadedConfig:
    registry: Registry
    ledger_section: Mapping[str, Any]
    source: str
    # ``[http]``, checked: keyword arguments of ``adapters.http.limits.HttpLimits``.
    http_limits: Mapping[str, Any] = field(default_factory=dict)
    # ``[adapters.NAME]``: deployment-wide default settings per adapter (``executors_by_name``).
    adapter_defaults: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    # ``[telemetry]``, checked (``adapters/telemetry/settings.py``): where traces go.
    telemetry: Mapping[str, Any] = field(default_factory=dict)
    # The registry's tables, canonical, without token hashes: what ``RegistryChanged`` records.
    document: Mapping[str, Any] = field(default_factory=dict)
    # ``[retention]``, checked (``domain/retention.py``); None: nothing is archived.
    retention: RetentionPolicy | None = None


def load_config(path: Path | None) -> LoadedConfig:
    """Read, parse and check the registry file (the built-in one when ``path`` is None)."""
    file = path or DEFAULT_REGISTRY
    source = str(file) if path else "<built-in registry>"
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigFileError(source, None, f"cannot read the file: {error.strerror}") from None
    return parse_config(text, source)


def parse_config(text: str, source: str) -> LoadedConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        line = _decode_error_line(str(error))
        raise ConfigFileError(source, line, f"not valid TOML: {error}") from None
    try:
        defaults = _adapters_section(data.get("adapters", {}))
        registry = build_registry(data, adapter_check=settings_check(defaults))
        _check_learn_hooks(registry)
        ledger = _ledger_section(data.get("ledger", {}))
        http_limits = _http_section(data.get("http", {}))
        telemetry = telemetry_section(data.get("telemetry", {}))
        retention = build_retention(data.get("retention"))
    except ConfigError as error:
        line = locate_key_line(text, error.where)
        raise ConfigFileError(source, line, error.reason, error.where) from None
    return LoadedConfig(
        registry=registry,
        ledger_section=ledger,
        source=source,
        http_limits=http_limits,
        adapter_defaults=defaults,
        telemetry=telemetry,
        document=registry_document(data),
        retention=retention,
    )


def _adapters_section(section: Any) -> dict[str, dict[str, Any]]:
    """``[adapters.NAME]``: default settings every task of that adapter starts from (a task
    type's or an ad-hoc task's own settings override them key by key)."""
    from execution_ledger.adapters.executors import executors_by_name

    if not isinstance(section, dict):
        raise ConfigError("expected a table", ("adapters",))
    executors = executors_by_name()
    for name, defaults in section.items():
        _require_known(name, executors, ("adapters", name), "adapter")
        if not isinstance(defaults, dict):
            raise ConfigError("expected a table of settings", ("adapters", name))
        try:  # as defaults: deployment keys (docker's allow_root...) may be given only here
            type(executors[name])(defaults).check_settings({})
        except ConfigError as error:
            # A key every task must give (``argv``, ``url``, ...) may be left to the task
            # types; anything said about a key given here is an error of this table.
            if error.where and error.where[0] in defaults:
                raise ConfigError(error.reason, ("adapters", name, *error.where)) from None
    return {name: dict(defaults) for name, defaults in section.items()}


def _require_known(
    name: str, known: Collection[str], where: tuple[str, ...], what: str = "key"
) -> None:
    if name not in known:
        raise ConfigError(
            f"unknown {what} {name!r} (expected one of: {', '.join(sorted(known))})", where
        )


def settings_check(
    defaults: Mapping[str, dict[str, Any]],
) -> Callable[[str, dict[str, Any], tuple[str, ...]], None]:
    """``check_adapter_settings`` over the deployment's adapter defaults."""

    def check(adapter: str, settings: dict[str, Any], where: tuple[str, ...]) -> None:
        check_adapter_settings(adapter, settings, where, defaults)

    return check


_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LEDGER_KEYS = {
    "database_url",
    "nats_url",
    "nats_credentials",
    "nats_tls_ca",
    "nats_tls_cert",
    "nats_tls_key",
    "schema",
    "read_database_url",
    "read_max_lag",
    "password_file",
}


def _ledger_section(section: Any) -> dict[str, str]:
    """The ``[ledger]`` table: where the database and NATS are, which schema to use."""
    if not isinstance(section, dict):
        raise ConfigError("expected a table", ("ledger",))
    for key, value in section.items():
        _require_known(key, _LEDGER_KEYS, ("ledger", key))
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", ("ledger", key))
    check_schema_name(section.get("schema", "ledger"), ("ledger", "schema"))
    return dict(section)


def _http_section(section: Any) -> dict[str, Any]:
    """The ``[http]`` table: limits of the HTTP API (``docs/configuration.md``), as the
    keyword arguments of ``HttpLimits``. Durations as in the rest of the file."""
    if not isinstance(section, dict):
        raise ConfigError("expected a table", ("http",))
    readers: dict[str, tuple[str, Callable[[Any, tuple[str, ...]], Any]]] = {
        "max_body_bytes": ("max_body_bytes", _whole_number(1024)),
        "max_wait": ("max_wait_seconds", parse_duration),
        "max_waiting": ("max_waiting", _whole_number(0)),
        "requests_per_second": ("requests_per_second", _positive_number),
        "burst": ("burst", _whole_number(1)),
        "stream_keepalive": ("stream_keepalive_seconds", parse_duration),
        "request_deadline": ("request_deadline_seconds", parse_duration),
        "header_read_timeout": ("header_read_timeout_seconds", parse_duration),
        "body_read_timeout": ("body_read_timeout_seconds", parse_duration),
        "keepalive_timeout": ("keepalive_timeout_seconds", parse_duration),
        "max_connections": ("max_connections", _whole_number(1)),
        "allowed_hosts": ("allowed_hosts", _host_names),
        "allowed_origins": ("allowed_origins", _origins),
        "allow_adhoc_without_principals": ("allow_adhoc_without_principals", _boolean),
    }
    limits: dict[str, Any] = {}
    for key, value in section.items():
        _require_known(key, readers, ("http", key))
        name, read = readers[key]
        limits[name] = read(value, ("http", key))
    return limits


def _whole_number(least: int) -> Callable[[Any, tuple[str, ...]], int]:
    def read(value: Any, where: tuple[str, ...]) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"expected a whole number of at least {least}, got {value!r}", where)
        return value

    return read


def _boolean(value: Any, where: tuple[str, ...]) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"expected true or false, got {value!r}", where)
    return value


def _strings(value: Any, where: tuple[str, ...], read: Callable[[str], str]) -> tuple[str, ...]:
    """A list of strings, each checked by ``read`` (``ValueError``: refused)."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"expected a list of strings, got {value!r}", where)
    for item in value:
        try:
            read(item)
        except ValueError as error:
            raise ConfigError(str(error), where) from None
    return tuple(value)


def _host_names(value: Any, where: tuple[str, ...]) -> tuple[str, ...]:
    """``[http] allowed_hosts``: names (``"ledger.example.com"``, with ``:port`` or not)."""
    from execution_ledger.adapters.http.browser_guard import split_host

    return _strings(value, where, lambda item: split_host(item)[0])


def _origins(value: Any, where: tuple[str, ...]) -> tuple[str, ...]:
    """``[http] allowed_origins``: ``scheme://host[:port]``, as browsers send them."""
    from execution_ledger.adapters.http.browser_guard import normalize_origin

    return _strings(value, where, normalize_origin)


def _positive_number(value: Any, where: tuple[str, ...]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"expected a number above 0, got {value!r}", where)
    if not math.isfinite(value):
        raise ConfigError(f"expected a finite number, got {value!r}", where)
    return float(value)


def check_schema_name(schema: str, where: tuple[str, ...]) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(f"schema {schema!r} must be a lower-case SQL identifier", where)
    return schema


def check_adapter_settings(
    adapter: str,
    settings: dict[str, Any],
    where: tuple[str, ...],
    defaults: Mapping[str, dict[str, Any]] | None = None,
) -> None:
    """Refuse an unknown adapter or settings its executor would refuse at run time (over
    the deployment's ``defaults`` for that adapter)."""
    from execution_ledger.adapters.executors import executors_by_name

    executors = executors_by_name(dict(defaults or {}))
    executor = executors.get(adapter)
    if executor is None:
        raise ConfigError(
            f"unknown adapter {adapter!r} (known: {', '.join(sorted(executors))})",
            (*where[:-1], "adapter"),
        )
    try:
        executor.check_settings(settings)
    except ConfigError as error:
        key = error.where[0] if error.where else None
        if key is not None and key not in settings and key in (defaults or {}).get(adapter, {}):
            # The value came from [adapters.NAME]: say so there.
            raise ConfigError(error.reason, ("adapters", adapter, *error.where)) from None
        raise ConfigError(error.reason, (*where, *error.where)) from None


def _check_learn_hooks(registry: Registry) -> None:
    """A task type's learn hook must import and be callable, like a python task's callable."""
    from execution_ledger.adapters.executors.python import load_callable

    for task_type in registry.task_types.values():
        if task_type.learn_hook is not None:
            try:
                load_callable(task_type.learn_hook)
            except ConfigError as error:
                raise ConfigError(
                    error.reason, ("task_types", task_type.name, "learn_hook")
                ) from None


def learn_hooks_of(registry: Registry) -> dict[str, Callable[..., Any]]:
    """The learn hook of every task type that names one, imported."""
    from execution_ledger.adapters.executors.python import load_callable

    return {
        task_type.name: load_callable(task_type.learn_hook)
        for task_type in registry.task_types.values()
        if task_type.learn_hook is not None
    }


def _decode_error_line(message: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else None


# -- finding the line of a key path -----------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)


def _split_dotted(text: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", text)
    return tuple(a or b or c for a, b, c in parts)


def locate_key_line(text: str, where: tuple[str, ...]) -> int | None:
    """The 1-based line that best matches ``where``: the deepest key or table header on it."""
    best_line, best_depth = None, 0
    table: tuple[str, ...] = ()
    array_counts: dict[tuple[str, ...], int] = {}
    open_string: str | None = None  # the delimiter of a multi-line string we are inside
    array_depth = 0  # brackets still open in a multi-line array value
    for number, line in enumerate(text.splitlines(), start=1):
        inside_value = open_string is not None or array_depth > 0
        open_string, array_depth = _scan_value_text(line, open_string, array_depth)
        if inside_value:
            continue
        header = _HEADER.match(line)
        if header:
            table = _split_dotted(header.group(2))
            if header.group(1) == "[[":
                index = array_counts.get(table, -1) + 1
                array_counts[table] = index
                table = (*table, str(index))
            path = table
        else:
            key = _KEY.match(line)
            if not key:
                continue
            path = (*table, *_split_dotted(key.group(1)))
        depth = _common_prefix(path, where)
        if depth == len(path) and depth > best_depth:
            best_line, best_depth = number, depth
    return best_line


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')


def _scan_value_text(line: str, open_string: str | None, depth: int) -> tuple[str | None, int]:
    """Track multi-line strings and arrays, so their lines are not read as keys."""
    for delimiter in ('"""', "'''"):
        if open_string in (None, delimiter) and line.count(delimiter) % 2 == 1:
            return (None if open_string else delimiter), depth
    if open_string is not None:
        return open_string, depth
    if _HEADER.match(line) and depth == 0:
        return None, 0
    bare = _QUOTED.sub("", line.split("#", 1)[0])
    value = bare.split("=", 1)[1] if depth == 0 and "=" in bare else bare
    return None, max(0, depth + value.count("[") - value.count("]"))


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count
