"""``ledger db grant ROLE``: give a database role what the service needs to run in this
ledger's schema, and nothing that can edit the log or disable its guard (see
``adapters/postgres/grants.py`` and docs/audit.md, "Running under a least-privilege role").

Run it as the schema's owner (the role that created it); then run the service with
``LEDGER_DATABASE_URL`` naming ROLE.
"""

from __future__ import annotations

import argparse
from typing import Any

import psycopg

from adapters.cli import render
from adapters.postgres.grants import grant_runtime_role
from adapters.runtime import Runtime
from domain.errors import InvalidQuery

EPILOG = """\
examples:
  ledger db grant ledger_service
  ledger db grant ledger_service --show     # also print the statements run
"""


def add_db_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``db`` (with ``grant``) to the ``ledger`` sub-commands."""
    db = commands.add_parser(
        "db",
        help="database roles: grant a least-privilege role what the service needs",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    grant = actions.add_parser(
        "grant",
        help="grant ROLE use of this schema: read and append the log, keep the read models; "
        "never edit the log",
    )
    grant.add_argument("role", help="an existing role that owns nothing here")
    grant.add_argument("--show", action="store_true", help="print the statements run")
    return db


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
