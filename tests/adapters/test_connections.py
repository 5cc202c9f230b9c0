"""Connections as operators write them: every parameter of the URL reaches the event
store's pool, the password may come from a file or libpq's ``PGPASSWORD``, and a URL is
only ever shown with its password hidden."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from execution_ledger.adapters.cli.main import main
from execution_ledger.adapters.config_file import DEFAULT_REGISTRY
from execution_ledger.adapters.postgres.conninfo import redact
from execution_ledger.adapters.postgres.reconnect import listen_options
from execution_ledger.adapters.runtime import open_runtime
from execution_ledger.adapters.settings import load_settings
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.submission import TaskRequest
from tests.private_postgres import PrivatePostgres, private_postgres

PASSWORD = "s3cret-Pw-9f2"


@pytest.fixture(scope="module")
def guarded() -> Iterator[PrivatePostgres]:
    """A private cluster asking a password of every TCP connection."""
    with private_postgres(password=PASSWORD) as server:
        yield server


@pytest.fixture
def guarded_env(guarded: PrivatePostgres, monkeypatch: pytest.MonkeyPatch) -> PrivatePostgres:
    monkeypatch.setenv("LEDGER_DATABASE_URL", guarded.url)  # no password in it
    monkeypatch.setenv("LEDGER_SCHEMA", f"test_{uuid4().hex[:16]}")
    for name in ("LEDGER_CONFIG", "PGPASSWORD", "PGPASSFILE", "LEDGER_READ_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")  # not the machine's ~/.pgpass
    return guarded


def enqueue_and_read_back() -> str:
    """Open the runtime, enqueue a task, read it back through the pool; the task id."""
    runtime = open_runtime(pool_size=1)
    try:
        task = runtime.ledger.enqueue(TaskRequest(type_name="echo", args={"n": 1}))
        runtime.catch_up()
        with runtime.store.transaction() as cur:
            row = cur.execute(
                f'SELECT task_id FROM "{runtime.settings.schema}".task_view'
            ).fetchone()
        assert row is not None and row["task_id"] == task.id
        return str(task.id)
    finally:
        runtime.close()


def test_every_parameter_of_the_url_reaches_the_event_store_pool(
    ledger_env: None, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"ledger-{uuid4().hex[:8]}"
    url = make_conninfo(
        database_url, application_name=name, options="-c statement_timeout=4321", sslmode="disable"
    )
    monkeypatch.setenv("LEDGER_DATABASE_URL", url)
    runtime = open_runtime(pool_size=1)
    try:
        with runtime.store.transaction() as cur:
            shown = cur.execute(
                "SELECT current_setting('application_name') AS name, "
                "current_setting('statement_timeout') AS timeout"
            ).fetchone()
        assert shown == {"name": name, "timeout": "4321ms"}
    finally:
        runtime.close()


def test_the_password_comes_from_the_password_file(
    guarded_env: PrivatePostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "db-password"
    secret.write_text(PASSWORD + "\n")
    monkeypatch.setenv("LEDGER_DATABASE_PASSWORD_FILE", str(secret))
    enqueue_and_read_back()


def test_the_password_file_may_be_named_in_the_config_file(
    guarded_env: PrivatePostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "db-password"
    secret.write_text(PASSWORD)
    config = tmp_path / "ledger.toml"
    registry = DEFAULT_REGISTRY.read_text()
    config.write_text(registry.replace("[ledger]\n", f'[ledger]\npassword_file = "{secret}"\n'))
    monkeypatch.setenv("LEDGER_CONFIG", str(config))
    enqueue_and_read_back()


def test_libpq_pgpassword_reaches_the_event_store(
    guarded_env: PrivatePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    enqueue_and_read_back()


def test_without_a_password_the_guarded_database_refuses_and_nothing_is_shown(
    guarded_env: PrivatePostgres,
) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        open_runtime(pool_size=1)


def test_an_unreadable_password_file_is_refused_naming_it(
    guarded_env: PrivatePostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-file"
    monkeypatch.setenv("LEDGER_DATABASE_PASSWORD_FILE", str(missing))
    with pytest.raises(ConfigError, match="cannot read the password file") as refused:
        load_settings()
    assert str(missing) in str(refused.value)


def test_an_empty_password_file_is_refused(
    guarded_env: PrivatePostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    monkeypatch.setenv("LEDGER_DATABASE_PASSWORD_FILE", str(empty))
    with pytest.raises(ConfigError, match="is empty"):
        load_settings()


@pytest.mark.parametrize("variable", ["LEDGER_DATABASE_URL", "LEDGER_READ_DATABASE_URL"])
def test_a_malformed_url_is_refused_with_its_password_hidden(
    ledger_env: None,
    variable: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, f"postgresql://ops:{PASSWORD}@127.0.0.1:5432/test?bogus=1")
    with pytest.raises(ConfigError, match="not a valid PostgreSQL connection string") as refused:
        load_settings()
    assert PASSWORD not in str(refused.value)
    assert variable in str(refused.value)
    assert main(["tasks"]) == 2
    captured = capsys.readouterr()
    assert "not a valid PostgreSQL connection string" in captured.err
    assert PASSWORD not in captured.out + captured.err


def test_a_wrong_read_max_lag_is_refused(ledger_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_READ_MAX_LAG", "-3s")
    with pytest.raises(ConfigError, match="LEDGER_READ_MAX_LAG"):
        load_settings()


@pytest.mark.parametrize(
    "written",
    [
        f"postgresql://ops:{PASSWORD}@db.example:5432/ledger?sslmode=verify-full",
        f"postgres://ops@db.example/ledger?password={PASSWORD}&sslmode=require",
        f"host=a,b port=5432,5433 password={PASSWORD} target_session_attrs=read-write",
        f"host=a password='{PASSWORD} x' dbname=ledger",
    ],
)
def test_redact_hides_the_password_and_keeps_the_rest(written: str) -> None:
    shown = redact(f"could not connect with {written} today")
    assert PASSWORD not in shown
    assert "***" in shown
    assert shown.endswith(" today")


def test_the_pool_keeps_the_operators_own_timeouts_and_adds_its_own_elsewhere(
    ledger_env: None, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "LEDGER_DATABASE_URL", make_conninfo(database_url, connect_timeout=7, keepalives_idle=17)
    )
    runtime = open_runtime(pool_size=1)
    try:
        with runtime.store.recorder.datastore.get_connection() as conn:
            used = psycopg.conninfo.conninfo_to_dict(conn.info.dsn)
        assert used["connect_timeout"] == "7" and used["keepalives_idle"] == "17"
        assert used["keepalives_interval"] == "2"  # the pool's, the URL naming none
    finally:
        runtime.close()


def test_the_read_replica_and_its_lag_may_be_named_in_the_config_file(
    ledger_env: None, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LEDGER_READ_DATABASE_URL", "LEDGER_READ_MAX_LAG"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "ledger.toml"
    registry = DEFAULT_REGISTRY.read_text()
    config.write_text(
        registry.replace(
            "[ledger]\n",
            f'[ledger]\nread_database_url = "{database_url}"\nread_max_lag = "250ms"\n',
        )
    )
    monkeypatch.setenv("LEDGER_CONFIG", str(config))
    settings = load_settings()
    assert settings.read_database_url == database_url
    assert settings.read_max_lag == 0.25
    config.write_text(registry.replace("[ledger]\n", '[ledger]\nread_max_lag = "soon"\n'))
    with pytest.raises(ConfigError, match=r"\[ledger\] read_max_lag"):
        load_settings()


def test_listen_connections_keep_the_operators_own_timeouts() -> None:
    options = listen_options("host=db.example connect_timeout=9 keepalives_idle=30")
    assert "connect_timeout" not in options and "keepalives_idle" not in options
    assert options["keepalives_interval"] == 2  # the LISTEN loop's own, the URL naming none
