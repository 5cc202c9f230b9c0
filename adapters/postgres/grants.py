"""The least-privilege runtime role: what a service that enqueues, runs and projects tasks
needs in a ledger schema, and nothing that could edit the log or switch its guard off.

``grant_runtime_role`` (``ledger db grant ROLE``), run by the schema's owner, gives ROLE:

- ``USAGE`` on the schema; ``SELECT, INSERT`` on ``ledger_events``; ``USAGE, SELECT`` on
  the schema's sequences (the log's positions come from one; no ``UPDATE``: no ``setval``);
- ``SELECT, INSERT, UPDATE, DELETE`` on every other table of the schema: the projections'
  tables, ``projection_positions`` and the operational tables (dispatch queue, running
  attempts, keys, ...), and by default on the tables the owner creates there later;
- nothing on functions: the log's ``ledger_log_enter()`` / ``ledger_log_horizon()`` and
  the library's insert function are executable by everyone (PostgreSQL's default), and
  writers take no table lock (``log_horizon.py``).

Never: ownership, ``TRUNCATE``, ``TRIGGER``, ``REFERENCES``, ``UPDATE`` / ``DELETE`` on
``ledger_events``, ``CREATE`` on the schema. So the role can neither edit the log nor
disable its append-only triggers (only an owner can). A role that is a superuser, or a
member of the owner's role, is refused: it would bypass all of this.

A process connected as such a role leaves the schema alone (``may_create_in``): the owner
creates and upgrades it (any ``ledger`` command run as the owner does).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from execution_ledger.domain.errors import InvalidQuery

EVENTS_TABLE = "ledger_events"  # the library's table (adapters.postgres.event_store)
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


def grant_runtime_role(conn: psycopg.Connection[Any], schema: str, role: str) -> list[str]:
    """Grant ``role`` what the service needs in ``schema``, in one transaction; returns
    the statements run. Refuses, changing nothing, a role that does not exist, is a
    superuser or can act as the owner. Tables the owner creates later in the schema (a
    projection rebuilt, a new read model) get the same table privileges by default."""
    owner = _check_role(conn, schema, role)
    cursor = conn.cursor(row_factory=tuple_row)
    tables = [
        name
        for (name,) in cursor.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename <> %s "
            "ORDER BY tablename",
            (schema, EVENTS_TABLE),
        )
    ]
    statements = _grant_statements(schema, role, owner, tables)
    with conn.transaction():
        for statement in statements:
            conn.execute(statement)
    return [statement.as_string(conn) for statement in statements]


def _grant_statements(schema: str, role: str, owner: str, tables: list[str]) -> list[sql.Composed]:
    grantee, namespace = sql.Identifier(role), sql.Identifier(schema)
    events = sql.Identifier(schema, EVENTS_TABLE)
    defaults = sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT ").format(
        sql.Identifier(owner), namespace
    )
    statements = [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(namespace, grantee),
        sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(events, grantee),
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
            namespace, grantee
        ),
        defaults + sql.SQL(TABLE_PRIVILEGES + " ON TABLES TO {}").format(grantee),
        defaults + sql.SQL("USAGE, SELECT ON SEQUENCES TO {}").format(grantee),
    ]
    if tables:
        names = sql.SQL(", ").join(sql.Identifier(schema, name) for name in tables)
        statements.insert(
            3, sql.SQL("GRANT " + TABLE_PRIVILEGES + " ON {} TO {}").format(names, grantee)
        )
    return statements


def _check_role(conn: psycopg.Connection[Any], schema: str, role: str) -> str:
    """The events table's owner, once ``role`` is known to be fit to be granted."""
    if not role or "\x00" in role:
        raise InvalidQuery(f"not a role name: {role!r}")
    cursor = conn.cursor(row_factory=tuple_row)
    row = cursor.execute(
        "SELECT r.rolsuper, pg_has_role(r.oid, t.tableowner, 'MEMBER'), t.tableowner "
        "FROM pg_roles r, pg_tables t "
        "WHERE r.rolname = %s AND t.schemaname = %s AND t.tablename = %s",
        (role, schema, EVENTS_TABLE),
    ).fetchone()
    if row is None:
        known = cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if known is None:
            raise InvalidQuery(f"no role {role!r} (create it first: CREATE ROLE ... LOGIN)")
        raise InvalidQuery(f"schema {schema!r} has no events table")
    superuser, owner, owner_name = row
    if superuser:
        raise InvalidQuery(f"role {role!r} is a superuser: it would bypass every grant")
    if owner:
        raise InvalidQuery(
            f"role {role!r} owns the events table or is a member of its owner: "
            "it could disable the append-only triggers; use a role that owns nothing"
        )
    return str(owner_name)


def may_create_in(conn: psycopg.Connection[Any], schema: str) -> bool:
    """False when ``schema`` exists and the connected role may not create objects in it:
    a runtime role, whose schema the owner keeps up to date."""
    cursor = conn.cursor(row_factory=tuple_row)
    row = cursor.execute(
        "SELECT to_regnamespace(%s) IS NULL OR has_schema_privilege(%s, 'CREATE')",
        (sql.Identifier(schema).as_string(conn), schema),
    ).fetchone()
    return bool(row and row[0])
