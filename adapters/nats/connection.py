"""Where the ledger's NATS connection goes, as operators write it, parsed once at start.

- ``LEDGER_NATS_URL`` (else ``[ledger] nats_url``): one server URL or a comma-separated
  list, e.g. a cluster's ``nats://n1:4222,nats://n2:4222,nats://n3:4222``. Each is
  ``nats://`` or ``tls://`` (or ``ws://`` / ``wss://``, not mixed with those), host and
  port; a bare ``host:port`` means ``nats://host:port``. A user and password
  (``nats://user:password@host``) or a token (``nats://token@host``) may sit in the URL.
- ``LEDGER_NATS_CREDENTIALS`` (else ``[ledger] nats_credentials``): a ``.creds`` file (a user
  JWT and its NKey seed), for servers run with accounts (decentralized auth).
- ``LEDGER_NATS_TLS_CA``, ``LEDGER_NATS_TLS_CERT``, ``LEDGER_NATS_TLS_KEY`` (else
  ``[ledger] nats_tls_ca``, ``nats_tls_cert``, ``nats_tls_key``): the CA to trust and a
  client certificate and key (mutual TLS); any of them turns TLS on.

nats-py tries the servers in random order, learns the cluster's other servers from the one
it reaches, and moves to another when its server goes away. URLs are shown only redacted
(``NatsConnection.shown``, ``redact``): the password or token becomes ``***``.

``stream_replicas`` says how many copies the ledger's JetStream streams keep: the
``[nats] stream_replicas`` setting, else 3 on a cluster of three servers or more (as the
connected server announces it), else 1.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from execution_ledger.adapters.postgres.conninfo import named as _named
from execution_ledger.domain.errors import ConfigError

if TYPE_CHECKING:
    from nats.aio.client import Client

HIDDEN = "***"
SCHEMES = ("nats", "tls", "ws", "wss")
CLUSTER_REPLICAS = 3  # copies of a stream on a cluster of that many servers or more
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^@/\s,]*)@")  # any scheme

# (setting, environment variable, [ledger] key)
_FILES = (
    ("credentials", "LEDGER_NATS_CREDENTIALS", "nats_credentials"),
    ("tls_ca", "LEDGER_NATS_TLS_CA", "nats_tls_ca"),
    ("tls_cert", "LEDGER_NATS_TLS_CERT", "nats_tls_cert"),
    ("tls_key", "LEDGER_NATS_TLS_KEY", "nats_tls_key"),
)


@dataclass(frozen=True)
class NatsConnection:
    servers: tuple[str, ...]
    credentials: str | None = None  # a .creds file: user JWT and NKey seed
    tls_ca: str | None = None  # CA certificates to trust (PEM)
    tls_cert: str | None = None  # client certificate (PEM), with tls_key
    tls_key: str | None = None

    @classmethod
    def parse(cls, text: str, where: tuple[str, ...] = ("LEDGER_NATS_URL",)) -> NatsConnection:
        return cls(parse_servers(text, where))

    @property
    def shown(self) -> str:
        """The servers, comma-separated, passwords and tokens hidden."""
        return ",".join(redact(server) for server in self.servers)

    @property
    def uses_tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert)

    def connect_options(self) -> dict[str, Any]:
        """The keyword arguments of ``nats.connect`` that say where and as whom."""
        options: dict[str, Any] = {"servers": list(self.servers)}
        if self.credentials:
            options["user_credentials"] = self.credentials
        if self.uses_tls:
            options["tls"] = self.ssl_context()
        return options

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context


def load_nats_connection(section: Mapping[str, Any]) -> NatsConnection | None:
    """The connection of the environment or the ``[ledger]`` table, checked; None when no
    URL is configured (the ledger may then start its own server)."""
    where: tuple[str, ...]
    if os.environ.get("LEDGER_NATS_URL"):
        text, where = os.environ["LEDGER_NATS_URL"], ("LEDGER_NATS_URL",)
    elif section.get("nats_url"):
        text, where = section["nats_url"], ("ledger", "nats_url")
    else:
        return None
    files = {name: _file(section, variable, key) for name, variable, key in _FILES}
    if bool(files["tls_cert"]) != bool(files["tls_key"]):
        raise ConfigError(
            "LEDGER_NATS_TLS_CERT and LEDGER_NATS_TLS_KEY ([ledger] nats_tls_cert and "
            "nats_tls_key) go together: the client certificate and its key",
            ("ledger", "nats_tls_cert"),
        )
    return NatsConnection(parse_servers(text, where), **files)


def parse_servers(text: str, where: tuple[str, ...]) -> tuple[str, ...]:
    """The server URLs of a comma-separated list, each checked (a ``ConfigError``, redacted,
    names the bad one)."""
    servers = tuple(_server(item.strip(), where) for item in text.split(","))
    websocket = {urlsplit(server).scheme in ("ws", "wss") for server in servers}
    if len(websocket) > 1:
        raise ConfigError(
            f"{_named(where)}: ws:// and wss:// URLs cannot be mixed with others", where
        )
    return servers


def _server(item: str, where: tuple[str, ...]) -> str:
    if not item:
        raise ConfigError(f"{_named(where)}: an empty server in the list", where)
    url = item if "://" in item else f"nats://{item}"
    parts = urlsplit(url)
    shown = redact(item)
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigError(
            f"{_named(where)}: {shown}: the scheme must be one of {', '.join(SCHEMES)}", where
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{_named(where)}: {shown}: the port is not a number", where) from None
    if not parts.hostname or (port is not None and not 0 < port < 65536):
        raise ConfigError(f"{_named(where)}: {shown}: not a server URL (host:port)", where)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{_named(where)}: {shown}: a server URL has no path or query", where)
    return url


def redact(text: str) -> str:
    """``text`` with the password (``user:***@``) or token (``***@``) of every URL in it
    hidden."""

    def hide(match: re.Match[str]) -> str:
        user, colon, _ = match.group(2).partition(":")
        return f"{match.group(1)}{user}:{HIDDEN}@" if colon else f"{match.group(1)}{HIDDEN}@"

    return _USERINFO.sub(hide, text)


def stream_replicas(nc: Client, configured: int | None) -> int:
    """How many copies a stream the ledger creates keeps: ``configured``, else
    ``CLUSTER_REPLICAS`` when the server says it is in a cluster of that many servers or
    more (its ``cluster`` name and ``connect_urls``), else 1."""
    if configured is not None:
        return configured
    info = getattr(nc, "_server_info", None) or {}  # the INFO the server greeted us with
    if info.get("cluster") and len(info.get("connect_urls") or ()) >= CLUSTER_REPLICAS:
        return CLUSTER_REPLICAS
    return 1


def _file(section: Mapping[str, Any], variable: str, key: str) -> str | None:
    """A file setting: the environment's, else the ``[ledger]`` table's; it must be
    readable."""
    where = (variable,) if os.environ.get(variable) else ("ledger", key)
    path = os.environ.get(variable) or section.get(key)
    if not path:
        return None
    if not os.access(path, os.R_OK) or not Path(path).is_file():
        raise ConfigError(f"{_named(where)}: cannot read the file {path}", where)
    return str(path)

