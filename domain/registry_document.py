"""The registry as a document: the canonical, recordable form of a configuration's registry.

A configuration file holds the registry (task types, queues, lanes, roles, principals,
schedules, NATS routes, defaults, and any other table) beside each node's own tables
(``[ledger]``: where the database is; ``[http]``: the API's limits; ``[adapters.NAME]``:
deployment defaults that may hold credentials; ``[telemetry]``: where this node's traces go,
with the exporter's headers, an API key perhaps). Only the registry is recorded in the log
(``RegistryChanged``), and never a principal's token hash: a principal is recorded by name
and role.

``registry_document`` keeps those tables as written (defaults are not filled in), turned
into plain JSON values with sorted keys, so the same registry written in another order,
with other comments or spacing, has the same ``document_digest``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Any

# The tables of a configuration that are each node's own: everything else is the registry.
NODE_TABLES = frozenset({"ledger", "http", "adapters", "telemetry"})
# What a recorded principal keeps (its token hash is a credential, and stays in the file).
PRINCIPAL_KEYS = ("name", "role")


def registry_document(config: Mapping[str, Any]) -> dict[str, Any]:
    """The registry part of a parsed configuration, canonical and without token hashes."""
    document: dict[str, Any] = {}
    for table, value in config.items():
        if table in NODE_TABLES:
            continue
        if table == "principals" and isinstance(value, list):
            value = [_principal(p) for p in value]
        document[table] = value
    canonical: dict[str, Any] = json.loads(canonical_json(document))
    return canonical


def _principal(spec: Any) -> Any:
    if not isinstance(spec, Mapping):
        return spec
    return {key: spec[key] for key in PRINCIPAL_KEYS if key in spec}


def canonical_json(document: Mapping[str, Any]) -> str:
    """One text per document: sorted keys, no spaces, times as ISO 8601 text."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
    )


def _plain(value: Any) -> str:
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a configuration value")


def document_digest(document: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical text: equal registries, equal digests."""
    return "sha256:" + hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()
