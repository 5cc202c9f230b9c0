"""Connection strings as operators write them: any libpq URL or ``key=value`` string (TLS
options, several hosts with ``target_session_attrs``, ``application_name``...), passed on
whole to every connection the ledger opens; the password possibly kept apart (a file,
libpq's ``PGPASSWORD`` / ``PGPASSFILE``); and only ever shown redacted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from execution_ledger.domain.errors import ConfigError

HIDDEN = "***"
_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)([^@\s]*)(@)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&\s]*)", re.IGNORECASE)
_KEY_PASSWORD = re.compile(
    r"((?<![?&\w])password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"]+)", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` with every password of a connection URL or ``key=value`` string hidden."""
    text = _URL_PASSWORD.sub(rf"\g<1>{HIDDEN}\g<3>", text)
    text = _QUERY_PASSWORD.sub(rf"\g<1>{HIDDEN}", text)
    return _KEY_PASSWORD.sub(rf"\g<1>{HIDDEN}", text)


def named(where: tuple[str, ...]) -> str:
    """How an operator finds a setting: ``[ledger] key`` or the environment variable."""
    return f"[{where[0]}] {'.'.join(where[1:])}" if len(where) > 1 else ".".join(where)


def parse(conninfo: str, where: tuple[str, ...]) -> dict[str, Any]:
    """The parameters of a connection string; a ``ConfigError`` (redacted) if libpq refuses
    it."""
    try:
        return conninfo_to_dict(conninfo)
    except psycopg.Error as error:
        reason = redact(str(error).strip())
        message = f"{named(where)}: not a valid PostgreSQL connection string: {reason}"
        raise ConfigError(message, where) from None


def with_password(conninfo: str, password: str | None) -> str:
    """``conninfo`` with ``password`` added, unless it names its own or there is none."""
    if password is None or conninfo_to_dict(conninfo).get("password"):
        return conninfo
    return make_conninfo(conninfo, password=password)


def read_password_file(path: str, where: tuple[str, ...]) -> str:
    """The password kept in ``path`` (its first line, without the line break)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        reason = f"{named(where)}: cannot read the password file {path}: {error.strerror}"
        raise ConfigError(reason, where) from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"{named(where)}: the password file {path} is empty", where)
    return lines[0]


def connection_kwargs(conninfo: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of ``conninfo``, plus those of ``defaults`` the operator did not set
    (a connect timeout, TCP keep-alives)."""
    params = conninfo_to_dict(conninfo)
    return {**{k: v for k, v in defaults.items() if k not in params}, **params}


def describe(conninfo: str) -> str:
    """Where a connection string points, without credentials: ``host:port/dbname``."""
    params = conninfo_to_dict(conninfo)
    hosts = str(params.get("host") or params.get("hostaddr") or "localhost").split(",")
    ports = str(params.get("port") or "5432").split(",")
    ports += [ports[-1]] * (len(hosts) - len(ports))
    where = ",".join(f"{host}:{port}" for host, port in zip(hosts, ports, strict=False))
    return f"{where}/{params.get('dbname') or params.get('user') or ''}"
