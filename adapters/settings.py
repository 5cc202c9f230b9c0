"""Settings: where the configuration file is, which database and schema to use.

Parsed once at start into an immutable object. Environment variables override the file:
``LEDGER_CONFIG`` (path of the TOML registry), ``LEDGER_DATABASE_URL``, ``LEDGER_SCHEMA``,
``LEDGER_NATS_URL`` (one server or a comma-separated list; credentials and TLS files:
``adapters/nats/connection.py``), ``LEDGER_READ_DATABASE_URL`` and ``LEDGER_READ_MAX_LAG``
(a read replica and the lag it may have), ``LEDGER_DATABASE_PASSWORD_FILE`` (the password of both
URLs, unless one names its own). The URLs are any libpq URL or ``key=value`` string;
libpq's own ``PGPASSWORD`` and ``PGPASSFILE`` apply too. A URL is only shown redacted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from execution_ledger.adapters.config_file import LoadedConfig, check_schema_name, load_config
from execution_ledger.adapters.nats.connection import NatsConnection, load_nats_connection
from execution_ledger.adapters.postgres import conninfo
from execution_ledger.domain.durations import parse_duration
from execution_ledger.domain.errors import ConfigError

DEFAULT_READ_MAX_LAG = 5.0  # seconds a replica may lag before reads go to the primary


@dataclass(frozen=True)
class Settings:
    config: LoadedConfig
    database_url: str | None
    schema: str
    nats_url: str | None
    read_database_url: str | None = None
    read_max_lag: float = DEFAULT_READ_MAX_LAG
    nats: NatsConnection | None = None  # nats_url's servers, with credentials and TLS files


def load_settings(config_path: str | Path | None = None) -> Settings:
    path = config_path or os.environ.get("LEDGER_CONFIG") or None
    config = load_config(Path(path) if path else None)
    section = config.ledger_section
    schema = os.environ.get("LEDGER_SCHEMA") or section.get("schema") or "ledger"
    check_schema_name(schema, ("LEDGER_SCHEMA",))
    password = _password(section)
    return Settings(
        config=config,
        database_url=_url(section, "database_url", "LEDGER_DATABASE_URL", password),
        schema=schema,
        nats_url=os.environ.get("LEDGER_NATS_URL") or section.get("nats_url"),
        read_database_url=_url(section, "read_database_url", "LEDGER_READ_DATABASE_URL", password),
        read_max_lag=_read_max_lag(section),
        nats=load_nats_connection(section),
    )


def _url(section: Any, key: str, variable: str, password: str | None) -> str | None:
    """A connection string from the environment or the file, checked, with the password
    file's password unless it names its own."""
    where = (variable,) if os.environ.get(variable) else ("ledger", key)
    url = os.environ.get(variable) or section.get(key)
    if not url:
        return None
    conninfo.parse(url, where)
    return conninfo.with_password(url, password)


def _password(section: Any) -> str | None:
    if path := os.environ.get("LEDGER_DATABASE_PASSWORD_FILE"):
        return conninfo.read_password_file(path, ("LEDGER_DATABASE_PASSWORD_FILE",))
    if path := section.get("password_file"):
        return conninfo.read_password_file(path, ("ledger", "password_file"))
    return None


def _read_max_lag(section: Any) -> float:
    """How far behind the replica may be (a duration, e.g. ``5s``) before reads go to the
    primary."""
    where: tuple[str, ...]
    if text := os.environ.get("LEDGER_READ_MAX_LAG"):
        value, where = text, ("LEDGER_READ_MAX_LAG",)
    elif "read_max_lag" in section:
        value, where = section["read_max_lag"], ("ledger", "read_max_lag")
    else:
        return DEFAULT_READ_MAX_LAG
    try:
        return parse_duration(value, where)
    except ConfigError as error:
        raise ConfigError(f"{conninfo.named(where)}: {error.reason}", where) from None
