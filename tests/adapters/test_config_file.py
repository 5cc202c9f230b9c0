"""The registry file: an invalid one is refused with ``FILE:LINE: reason (at key.path)``,
and the built-in registry loads."""

from __future__ import annotations

import hashlib
from pathlib import Path
from textwrap import dedent

import pytest

from execution_ledger.adapters.config_file import (
    ConfigFileError,
    load_config,
    locate_key_line,
    parse_config,
)

SOURCE = "ledger.toml"
TOKEN_HASH = hashlib.sha256(b"s3cret-token").hexdigest()
ECHO = "execution_ledger.adapters.executors.builtin_tasks:echo"


def refusal(text: str) -> ConfigFileError:
    """The error ``parse_config`` raises for ``text`` (dedented; line 1 is its first line)."""
    with pytest.raises(ConfigFileError) as caught:
        parse_config(dedent(text).lstrip("\n"), SOURCE)
    return caught.value


def test_a_toml_syntax_error_reports_its_line() -> None:
    error = refusal(
        """
        [defaults]
        queue = "default"

        [task_types.echo]
        adapter = python
        """
    )

    assert error.line == 5
    assert str(error).startswith(f"{SOURCE}:5: not valid TOML: ")


def test_an_unknown_key_in_a_task_type_reports_the_line_of_that_key() -> None:
    error = refusal(
        f"""
        [task_types.echo]
        adapter = "python"
        settings = {{ callable = "{ECHO}" }}
        retries = 3
        """
    )

    assert error.line == 4
    assert error.where == ("task_types", "echo", "retries")
    assert error.reason.startswith("unknown key 'retries' (expected one of: ")
    assert str(error) == f"{SOURCE}:4: {error.reason} (at task_types.echo.retries)"


def test_an_unknown_adapter_reports_the_line_of_the_adapter_key() -> None:
    error = refusal(
        """
        [task_types.echo]
        description = "Echoes."
        adapter = "telepathy"
        settings = { thought = "hi" }
        """
    )

    assert error.line == 3
    assert error.where == ("task_types", "echo", "adapter")
    assert (
        error.reason
        == "unknown adapter 'telepathy' (known: docker, http, lua, nats, python, shell)"
    )


def test_adapter_settings_refused_by_the_executor_report_the_line_of_the_settings() -> None:
    error = refusal(
        """
        [task_types.echo]
        adapter = "python"
        settings = { callable = "m:f", colour = "blue" }
        """
    )

    assert error.line == 3
    assert error.where == ("task_types", "echo", "settings", "colour")
    assert "unknown setting 'colour'" in error.reason


def test_an_invalid_duration_inside_an_inline_table_reports_the_line_of_that_table() -> None:
    error = refusal(
        f"""
        [task_types.echo]
        adapter = "python"
        settings = {{ callable = "{ECHO}" }}
        timeouts = {{ heartbeat = "10s", start_to_close = "soon" }}
        """
    )

    assert error.line == 4
    assert error.where == ("task_types", "echo", "timeouts", "start_to_close")
    assert "cannot read duration 'soon'" in error.reason


def test_an_invalid_duration_in_a_quoted_task_type_reports_its_line() -> None:
    error = refusal(
        f"""
        [queues.agents]
        concurrency = 2

        [task_types."agent.step"]
        adapter = "python"
        settings = {{ callable = "{ECHO}" }}
        retry = {{ max_attempts = 3, backoff_initial = "often" }}
        """
    )

    assert error.line == 7
    assert error.where == ("task_types", "agent.step", "retry", "backoff_initial")


def test_a_bad_second_principal_reports_the_line_of_its_key() -> None:
    error = refusal(
        f"""
        [[principals]]
        name = "ci"
        role = "tester"
        token_sha256 = "{TOKEN_HASH}"

        [[principals]]
        name = "dev"
        role = "coder"
        token_sha256 = "s3cret-token"
        """
    )

    assert error.line == 9
    assert error.where == ("principals", "1", "token_sha256")
    assert str(error).startswith(f"{SOURCE}:9: token_sha256 must be the hex SHA-256")


def test_a_principal_missing_a_key_reports_the_line_of_its_table() -> None:
    error = refusal(
        f"""
        [[principals]]
        name = "ci"
        role = "tester"
        token_sha256 = "{TOKEN_HASH}"

        [[principals]]
        name = "dev"
        token_sha256 = "{TOKEN_HASH}"
        """
    )

    assert error.line == 6
    assert error.where == ("principals", "1", "role")


def test_a_bad_value_in_a_subtable_reports_the_line_of_its_key() -> None:
    error = refusal(
        """
        [defaults]
        queue = "default"

        [defaults.retry]
        max_attempts = 3
        jitter = 7
        """
    )

    assert error.line == 6
    assert error.where == ("defaults", "retry", "jitter")


def test_a_ledger_section_that_is_not_a_table_is_refused_at_its_line() -> None:
    error = refusal(
        """
        # the service
        ledger = "postgres://"
        """
    )

    assert error.line == 2
    assert error.reason == "expected a table"


def test_a_valid_file_gives_its_registry_and_ledger_section() -> None:
    loaded = parse_config(
        dedent(
            f"""
            [ledger]
            database_url = "postgresql://localhost/ledger"

            [task_types.echo]
            adapter = "python"
            settings = {{ callable = "{ECHO}" }}
            """
        ),
        SOURCE,
    )

    assert loaded.source == SOURCE
    assert loaded.ledger_section == {"database_url": "postgresql://localhost/ledger"}
    assert loaded.registry.task_types["echo"].settings == {"callable": ECHO}


def test_a_file_is_loaded_from_its_path_and_named_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "ledger.toml"
    path.write_text('[defaults]\nqueue = "main"\n')
    assert load_config(path).registry.default_queue == "main"

    path.write_text('[defaults]\nqueue = "not a name"\n')
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:2: ")


def test_a_missing_file_is_refused_without_a_line(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    with pytest.raises(ConfigFileError, match="cannot read the file") as caught:
        load_config(path)
    assert caught.value.line is None
    assert str(caught.value).startswith(f"{path}:?: ")


def test_the_built_in_registry_loads_with_its_demo_task_types() -> None:
    loaded = load_config(None)
    registry = loaded.registry

    assert loaded.source == "<built-in registry>"
    assert set(registry.task_types) >= {
        "echo", "add", "sleep", "fail", "hello", "square", "agent.step",
    }  # fmt: skip
    agent_step = registry.task_types["agent.step"]
    assert (agent_step.queue, agent_step.lane) == ("agents", "agent:{agent_id}")
    assert registry.lane_limit("agent:42") == 1
    assert registry.task_types["hello"].adapter == "shell"
    assert registry.task_types["square"].adapter == "lua"


# -- locating a key path ------------------------------------------------------------------

LOCATED = dedent(
    """
    [defaults]
    queue = "default"

    [task_types."agent.step"]
    adapter = "python"
    timeouts.heartbeat = "10s"

    [[principals]]
    name = "ci"

    [[principals]]
    name = "dev"
    """
).lstrip("\n")


@pytest.mark.parametrize(
    ("where", "line"),
    [
        (("defaults", "queue"), 2),
        (("defaults", "retry", "jitter"), 1),
        (("task_types", "agent.step"), 4),
        (("task_types", "agent.step", "adapter"), 5),
        (("task_types", "agent.step", "timeouts", "heartbeat"), 6),
        (("task_types", "agent.step", "settings"), 4),
        (("principals", "0", "name"), 9),
        (("principals", "1", "name"), 12),
        (("principals", "1", "role"), 11),
        (("queues", "default"), None),
    ],
)
def test_the_line_of_a_key_path_is_that_of_its_deepest_key_or_table(
    where: tuple[str, ...], line: int | None
) -> None:
    assert locate_key_line(LOCATED, where) == line


def test_lines_inside_a_multi_line_string_are_not_taken_for_keys() -> None:
    error = refusal(
        '''
        [task_types.square]
        adapter = "lua"
        settings.script = """
        retry = 3
        return retry
        """
        retry = { max_attempts = 0 }
        '''
    )

    assert error.line == 7


def test_an_unknown_key_in_the_ledger_section_reports_its_line() -> None:
    text = '[ledger]\nschema = "ledger"\ndatabse_url = "postgresql://x"\n'
    with pytest.raises(ConfigFileError, match="unknown key 'databse_url'") as caught:
        parse_config(text, "ledger.toml")
    assert caught.value.line == 3


def test_a_schema_that_is_not_an_sql_identifier_reports_its_line() -> None:
    with pytest.raises(ConfigFileError, match="lower-case SQL identifier") as caught:
        parse_config('[ledger]\n\nschema = "Robert; DROP"\n', "ledger.toml")
    assert caught.value.line == 3


def test_lines_inside_a_multi_line_array_are_not_taken_for_table_headers() -> None:
    text = '[task_types.t]\nadapter = "shell"\nsettings = { argv = [\n  ["x"],\n] }\nbogus = 1\n'
    with pytest.raises(ConfigFileError, match="unknown key 'bogus'") as caught:
        parse_config(text, "ledger.toml")
    assert caught.value.line == 6


def test_the_http_table_sets_the_http_apis_limits() -> None:
    config = parse_config(
        dedent(
            """
            [http]
            max_body_bytes = 65536
            max_wait = "30s"
            max_waiting = 10
            requests_per_second = 2.5
            burst = 5
            stream_keepalive = "500ms"
            """
        ),
        SOURCE,
    )
    assert config.http_limits == {
        "max_body_bytes": 65536,
        "max_wait_seconds": 30.0,
        "max_waiting": 10,
        "requests_per_second": 2.5,
        "burst": 5,
        "stream_keepalive_seconds": 0.5,
    }
    assert parse_config("", SOURCE).http_limits == {}  # the built-in defaults


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("max_body_bytes = 10", "expected a whole number of at least 1024, got 10"),
        ("max_body_bytes = true", "expected a whole number of at least 1024, got True"),
        ('max_wait = "soon"', "cannot read duration 'soon'"),
        ("max_waiting = -1", "expected a whole number of at least 0, got -1"),
        ("requests_per_second = 0", "expected a number above 0, got 0"),
        ("requests_per_second = inf", "expected a finite number, got inf"),
        ("burst = 1.5", "expected a whole number of at least 1, got 1.5"),
        ("timeout = 3", "unknown key 'timeout' (expected one of: allow_adhoc_without_principals"),
    ],
)
def test_a_bad_http_limit_reports_the_line_of_its_key(line: str, reason: str) -> None:
    error = refusal(f'[ledger]\nschema = "x"\n\n[http]\n{line}\n')
    assert error.line == 5
    assert reason in str(error)


def test_overlapping_nats_routes_report_the_line_of_the_later_subject() -> None:
    error = refusal(
        f"""
        [task_types.echo]
        adapter = "python"
        settings = {{ callable = "{ECHO}" }}

        [[nats.routes]]
        subject = "orders.*"
        task_type = "echo"

        [[nats.routes]]
        subject = "orders.eu"
        task_type = "echo"
        """
    )
    assert error.line == 10
    assert "overlaps route 1 'orders.*'" in str(error)


def test_adapter_defaults_apply_to_every_task_type_of_that_adapter() -> None:
    config = parse_config(
        dedent(
            """
            [adapters.shell]
            max_output_bytes = 3

            [task_types.hello]
            adapter = "shell"
            settings = { argv = ["echo", "hello"] }
            """
        ),
        SOURCE,
    )
    assert config.adapter_defaults == {"shell": {"max_output_bytes": 3}}


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("[adapters.nope]\nx = 1\n", 1, "unknown adapter 'nope'"),
        ("[adapters.shell]\ncolour = 1\n", 2, "unknown setting 'colour'"),
        (
            '[adapters.shell]\nmax_output_bytes = -1\n\n[task_types.t]\nadapter = "shell"\n'
            'settings = { argv = ["echo"] }\n',
            2,
            "max_output_bytes",
        ),
    ],
)
def test_bad_adapter_defaults_report_the_line_of_their_key(
    text: str, line: int, reason: str
) -> None:
    error = refusal(text)
    assert error.line == line
    assert reason in str(error)
