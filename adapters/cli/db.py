"""``ledger db grant ROLE``: give a database role what the service needs to run in this
ledger's schema, and nothing that can edit the log or disable its guard (see
``adapters/postgres/grants.py`` and docs/audit.md, "Running under a least-privilege role").

Run it as the schema's owner (the role that created it); then run the service with
``LEDGER_DATABASE_URL`` naming ROLE.

``ledger db status|stop|reset``: the embedded PostgreSQL (``adapters/postgres/embedded.py``),
run without opening the runtime (which would start the server they act on). ``reset``
asks before deleting the data directory (``--yes`` skips the question; without a terminal
to ask on, it is refused).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import psycopg

from execution_ledger.adapters.cli import render
from execution_ledger.adapters.cli.parsers import add_db_parser as add_db_parser  # re-exported
from execution_ledger.adapters.postgres.embedded import (
    default_data_dir,
    reset_embedded_postgres,
    running_server,
    stop_embedded_postgres,
)
from execution_ledger.adapters.postgres.grants import grant_runtime_role
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import InvalidQuery, InvalidSubmission


def cmd_db(rt: Runtime, options: argparse.Namespace) -> int:
    """Run ``ledger db ACTION``; returns the exit status."""
    schema = rt.settings.schema
    try:
        with psycopg.connect(rt.database_url, autocommit=True) as conn:
            statements = grant_runtime_role(conn, schema, options.role)
    except psycopg.errors.InsufficientPrivilege as error:
        raise InvalidQuery(f"run this as the schema's owner: {error}") from None
    render.console.print(f"granted role {options.role!r} the runtime privileges on {schema!r}")
    if options.show:
        for statement in statements:
            print(f"{statement};")
    return 0


def cmd_embedded(options: argparse.Namespace) -> int:
    """Run ``ledger db status|stop|reset`` on the embedded server's data directory."""
    data_dir = default_data_dir()
    if os.environ.get("LEDGER_DATABASE_URL"):
        print(f"note: LEDGER_DATABASE_URL is set; commands use it, not the server in {data_dir}")
    if options.action == "status":
        server = running_server(data_dir)
        if server is not None:
            print(f"running: {server.where()}")
        elif (data_dir / "PG_VERSION").exists():
            print(f"stopped: data dir {data_dir} (the next command starts it)")
        else:
            print(f"absent: no data dir at {data_dir} (the next command creates it)")
        return 0
    if options.action == "stop":
        stopped = stop_embedded_postgres(data_dir)
        print(f"stopped: {stopped.where()}" if stopped else f"not running: data dir {data_dir}")
        return 0
    return _reset(data_dir, options.yes)


def _reset(data_dir: Path, confirmed: bool) -> int:
    if not data_dir.exists():
        print(f"nothing to reset: no data dir at {data_dir}")
        return 0
    if not confirmed:
        if not sys.stdin.isatty():
            raise InvalidSubmission(
                f"reset deletes {data_dir} and every ledger in it; give --yes to confirm"
            )
        answer = input(f"delete {data_dir} and every ledger in it? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    stopped = reset_embedded_postgres(data_dir)
    was = f"stopped pid {stopped.pid}, " if stopped else ""
    print(f"reset: {was}deleted {data_dir}")
    return 0
