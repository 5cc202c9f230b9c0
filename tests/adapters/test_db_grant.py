"""``ledger db grant ROLE`` on a real PostgreSQL: a role that owns nothing, granted by the
schema's owner, runs the service (enqueue, run, project, verify) and can neither edit the
log nor switch its append-only guard off. Roles unfit for it are refused, changing nothing."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql

from execution_ledger.adapters.cli.main import main
from execution_ledger.adapters.postgres.audit import APPEND_ONLY_MESSAGE, verify_chain
from execution_ledger.adapters.postgres.event_store import EVENTS_TABLE
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.submission import TaskRequest
from tests.processors.worker_harness import run_nodes_until


def create_role(database_url: str, *options: str) -> str:
    name = f"ledger_rt_{uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN " + " ".join(options)).format(sql.Identifier(name))
        )
    return name


def drop_role(database_url: str, name: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def role(runtime: Runtime, database_url: str) -> Iterator[str]:
    """A login role that owns nothing (trust authentication on 127.0.0.1), dropped after."""
    name = create_role(database_url)
    yield name
    drop_role(database_url, name)


def as_role(database_url: str, role: str) -> str:
    return psycopg.conninfo.make_conninfo(database_url, user=role)


def ledger(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def task_view_state(runtime: Runtime, task_id: UUID) -> str | None:
    query = sql.SQL("SELECT state FROM {} WHERE task_id = %s").format(
        sql.Identifier(runtime.settings.schema, "task_view")
    )
    with runtime.store.transaction() as cursor:
        row = cursor.execute(query, (task_id,)).fetchone()
    return None if row is None else str(row["state"])


def granted_anything(database_url: str, role: str, schema: str) -> bool:
    """Whether ``role`` appears in the schema's, its tables' or its default privileges."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT FROM pg_namespace n, aclexplode(n.nspacl) a "
            "               WHERE n.nspname = %(schema)s AND a.grantee = r.oid) "
            "    OR EXISTS (SELECT FROM pg_class c, aclexplode(c.relacl) a "
            "               WHERE c.relnamespace = to_regnamespace(quote_ident(%(schema)s)) "
            "               AND a.grantee = r.oid) "
            "    OR EXISTS (SELECT FROM pg_default_acl d, aclexplode(d.defaclacl) a "
            "               WHERE d.defaclnamespace = to_regnamespace(quote_ident(%(schema)s)) "
            "               AND a.grantee = r.oid) "
            "FROM pg_roles r WHERE r.rolname = %(role)s",
            {"schema": schema, "role": role},
        ).fetchone()
    return bool(row and row[0])


def test_a_granted_role_runs_the_service_and_cannot_edit_the_log_or_disable_its_guard(
    runtime: Runtime,
    role: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    schema = runtime.settings.schema
    code, out, _ = ledger(capsys, "db", "grant", role, "--show")
    assert code == 0 and f"granted role {role!r}" in out
    assert "GRANT SELECT, INSERT ON" in out and "TRUNCATE" not in out
    assert granted_anything(database_url, role, schema)

    monkeypatch.setenv("LEDGER_DATABASE_URL", as_role(database_url, role))
    service = open_runtime(pool_size=4)
    try:
        task = service.ledger.enqueue(TaskRequest("echo", {"n": 7}))
        run_nodes_until(service, lambda: task_view_state(service, task.id) == "succeeded")
        assert service.store.load(task.id).result == {"n": 7}
        runtime.runners["task_view"].rebuild()  # the owner rebuilds a read model ...
        later = service.ledger.enqueue(TaskRequest("echo", {"n": 8}))
        service.catch_up()  # ... and the role still keeps it
        assert task_view_state(service, later.id) == "ready"
        assert verify_chain(service.store, service.runners["audit_chain"]).ok
    finally:
        service.close()

    events = sql.Identifier(schema, EVENTS_TABLE)
    with psycopg.connect(as_role(database_url, role), autocommit=True) as conn:
        for statement in (
            "UPDATE {} SET topic = topic",
            "DELETE FROM {}",
            "TRUNCATE {}",
            "ALTER TABLE {} DISABLE TRIGGER ALL",
            "ALTER TABLE {} OWNER TO CURRENT_USER",
            "DROP TABLE {}",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL(statement).format(events))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET session_replication_role = replica")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(schema, "x")))
    with psycopg.connect(database_url, autocommit=True) as owner:  # the guard still holds
        with pytest.raises(psycopg.errors.RaiseException, match=APPEND_ONLY_MESSAGE):
            owner.execute(sql.SQL("DELETE FROM {}").format(events))
        row = owner.execute(
            "SELECT has_table_privilege(%s, %s, 'UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES')",
            (role, events.as_string(owner)),
        ).fetchone()
    assert row is not None and row[0] is False


@pytest.mark.parametrize("kind", ["missing", "superuser", "member of the owner"])
def test_an_unfit_role_is_refused_and_nothing_is_granted(
    runtime: Runtime,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    schema = runtime.settings.schema
    name = f"ledger_rt_missing_{uuid4().hex[:8]}"
    if kind == "superuser":
        name = create_role(database_url, "SUPERUSER")
    elif kind == "member of the owner":
        name = create_role(database_url)
        with psycopg.connect(database_url, autocommit=True) as conn:
            owner = conn.execute(
                "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = %s",
                (schema, EVENTS_TABLE),
            ).fetchone()
            assert owner is not None
            conn.execute(sql.SQL("GRANT {} TO {}").format(*map(sql.Identifier, (owner[0], name))))
    try:
        code, _, err = ledger(capsys, "db", "grant", name)
        assert code == 2
        expected = {
            "missing": f"error: no role {name!r}",
            "superuser": f"error: role {name!r} is a superuser",
            "member of the owner": f"error: role {name!r} owns the events table or is a member",
        }[kind]
        assert err.startswith(expected)
        if kind != "missing":
            assert not granted_anything(database_url, name, schema)
    finally:
        if kind != "missing":
            drop_role(database_url, name)


def test_a_role_name_with_a_nul_is_refused(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = ledger(capsys, "db", "grant", "bad\x00name")
    assert code == 2 and err.startswith("error: not a role name")
