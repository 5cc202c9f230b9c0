"""Settings: where the configuration file is, which database and schema to use.

Parsed once at start into an immutable object. Environment variables override the file:
``LEDGER_CONFIG`` (path of the TOML registry), ``LEDGER_DATABASE_URL``, ``LEDGER_SCHEMA``,
``LEDGER_NATS_URL``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from adapters.config_file import LoadedConfig, check_schema_name, load_config


@dataclass(frozen=True)
class Settings:
    config: LoadedConfig
    database_url: str | None
    schema: str
    nats_url: str | None


def load_settings(config_path: str | Path | None = None) -> Settings:
    path = config_path or os.environ.get("LEDGER_CONFIG") or None
    config = load_config(Path(path) if path else None)
    section = config.ledger_section
    schema = os.environ.get("LEDGER_SCHEMA") or section.get("schema") or "ledger"
    check_schema_name(schema, ("LEDGER_SCHEMA",))
    return Settings(
        config=config,
        database_url=os.environ.get("LEDGER_DATABASE_URL") or section.get("database_url"),
        schema=schema,
        nats_url=os.environ.get("LEDGER_NATS_URL") or section.get("nats_url"),
    )
