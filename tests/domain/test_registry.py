"""Building the registry from the configuration mapping: defaults, what is refused (each
refusal names the key path at fault), roles, principals and lane limits."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.registry import QueueConfig, build_registry
from execution_ledger.domain.retry import RetryPolicy
from execution_ledger.domain.timeouts import TimeoutOverrides, Timeouts

TOKEN_HASH = hashlib.sha256(b"s3cret-token").hexdigest()


def refusal(config: dict[str, Any]) -> ConfigError:
    """The ``ConfigError`` that ``build_registry`` raises for ``config``."""
    with pytest.raises(ConfigError) as caught:
        build_registry(config)
    return caught.value


def echo(**spec: Any) -> dict[str, Any]:
    """A configuration holding one task type ``echo`` with ``spec`` added to it."""
    return {"task_types": {"echo": {"adapter": "python", **spec}}}


# -- defaults -----------------------------------------------------------------------------


def test_an_empty_configuration_gives_the_default_queue_roles_timeouts_and_retry() -> None:
    registry = build_registry({})

    assert registry.default_queue == "default"
    assert registry.queues == {"default": QueueConfig(name="default")}
    assert registry.queue("default").concurrency == 10
    assert set(registry.roles) == {"admin", "coder", "tester", "critic"}
    assert registry.default_timeouts == Timeouts(start_to_close=300.0, heartbeat=30.0)
    assert registry.default_retry == RetryPolicy()
    assert registry.task_types == {}
    assert registry.principals == ()


def test_a_named_default_queue_is_created_when_not_configured() -> None:
    registry = build_registry({"defaults": {"queue": "main"}})

    assert registry.default_queue == "main"
    assert "main" in registry.queues


def test_a_task_type_without_a_queue_goes_to_the_default_queue() -> None:
    registry = build_registry({"defaults": {"queue": "main"}, **echo()})

    assert registry.task_types["echo"].queue == "main"


def test_the_queue_named_by_a_task_type_is_created_when_not_configured() -> None:
    registry = build_registry(echo(queue="mail"))

    assert registry.queues["mail"] == QueueConfig(name="mail")


def test_a_configured_queue_keeps_its_settings() -> None:
    registry = build_registry(
        {"queues": {"slow": {"concurrency": 2, "paused": True, "timeouts": {"heartbeat": "1m"}}}}
    )

    assert registry.queue("slow") == QueueConfig(
        name="slow", concurrency=2, paused=True, timeouts=TimeoutOverrides(heartbeat=60.0)
    )


def test_default_timeouts_and_retry_come_from_the_defaults_table() -> None:
    registry = build_registry(
        {
            "defaults": {
                "timeouts": {"start_to_close": "10m", "schedule_to_close": "1d"},
                "retry": {"max_attempts": 5, "backoff_initial": "500ms"},
            }
        }
    )

    assert registry.default_timeouts == Timeouts(
        start_to_close=600.0, heartbeat=30.0, schedule_to_close=86400.0
    )
    assert registry.default_retry == RetryPolicy(max_attempts=5, backoff_initial=0.5)


def test_a_task_type_is_read_with_all_its_settings() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    registry = build_registry(
        echo(
            settings={"callable": "m:f"},
            priority=7,
            timeouts={"start_to_close": "45s"},
            roles=["admin", "coder"],
            schema=schema,
            lane="agent:{agent_id}",
            learn_hook="m:learn",
            description="Echoes.",
            tags=["demo"],
        )
    )

    echo_type = registry.task_type("echo")
    assert echo_type is not None
    assert (echo_type.name, echo_type.adapter, echo_type.settings) == (
        "echo", "python", {"callable": "m:f"}
    )  # fmt: skip
    assert echo_type.priority == 7
    assert echo_type.timeouts == TimeoutOverrides(start_to_close=45.0)
    assert echo_type.roles == ("admin", "coder")
    assert echo_type.schema == schema
    assert (echo_type.lane, echo_type.learn_hook) == ("agent:{agent_id}", "m:learn")
    assert (echo_type.description, echo_type.tags) == ("Echoes.", ("demo",))
    assert registry.task_type("nope") is None


def test_a_task_type_without_roles_is_open_to_every_role() -> None:
    registry = build_registry({"roles": {"bot": {}}, **echo()})

    assert set(registry.task_types["echo"].roles) == {"admin", "coder", "tester", "critic", "bot"}


def test_a_task_types_retry_overrides_the_default_retry_key_by_key() -> None:
    registry = build_registry(
        {"defaults": {"retry": {"max_attempts": 5, "jitter": 0.2}}, **echo(retry={"jitter": 0})}
    )

    assert registry.task_types["echo"].retry == RetryPolicy(max_attempts=5, jitter=0.0)


# -- refusals name the key path -----------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"colour": "blue"}, ("colour",)),
        ({"defaults": {"queues": "x"}}, ("defaults", "queues")),
        ({"queues": {"q": {"workers": 3}}}, ("queues", "q", "workers")),
        ({"lanes": {"agent:*": {"max": 2}}}, ("lanes", "agent:*", "max")),
        (echo(colour="blue"), ("task_types", "echo", "colour")),
        ({"roles": {"bot": {"may_delete": True}}}, ("roles", "bot", "may_delete")),
        (
            {"principals": [{"name": "ci", "role": "admin", "token_sha256": TOKEN_HASH, "x": 1}]},
            ("principals", "0", "x"),
        ),
    ],
)
def test_an_unknown_key_is_refused_with_its_key_path(
    config: dict[str, Any], where: tuple[str, ...]
) -> None:
    error = refusal(config)

    assert error.where == where
    assert error.reason.startswith(f"unknown key {where[-1]!r} (expected one of: ")


@pytest.mark.parametrize(
    ("config", "where", "reason"),
    [
        ({"task_types": {"echo": {}}}, ("task_types", "echo"), "a task type needs an adapter"),
        (echo(priority="high"), ("task_types", "echo", "priority"), "expected an integer"),
        (echo(priority=True), ("task_types", "echo", "priority"), "expected an integer"),
        (echo(adapter="my adapter"), ("task_types", "echo", "adapter"), "not a valid name"),
        (echo(queue=""), ("task_types", "echo", "queue"), "not a valid name"),
        (echo(settings="x"), ("task_types", "echo", "settings"), "expected a table"),
        (echo(tags="demo"), ("task_types", "echo", "tags"), "expected an array of strings"),
        (echo(lane=7), ("task_types", "echo", "lane"), "expected a string"),
        (
            echo(timeouts={"start_to_close": "soon"}),
            ("task_types", "echo", "timeouts", "start_to_close"),
            "cannot read duration 'soon'",
        ),
        (
            echo(timeouts={"forever": "1s"}),
            ("task_types", "echo", "timeouts", "forever"),
            "unknown timeout 'forever'",
        ),
        (
            echo(retry={"max_attempts": 0}),
            ("task_types", "echo", "retry", "max_attempts"),
            "max_attempts must be an integer from 1 to 1000",
        ),
        (
            echo(retry={"tries": 2}),
            ("task_types", "echo", "retry", "tries"),
            "unknown retry setting 'tries'",
        ),
        ({"task_types": {"bad name": {"adapter": "python"}}}, ("task_types", "bad name"), "name"),
        ({"task_types": {"echo": "python"}}, ("task_types", "echo"), "expected a table"),
        ({"task_types": []}, ("task_types",), "expected a table"),
        ({"queues": {"q": {"concurrency": 0}}}, ("queues", "q", "concurrency"), ">= 1"),
        ({"queues": {"q": {"paused": "yes"}}}, ("queues", "q", "paused"), "true or false"),
        ({"lanes": {"agent:*": {"limit": 0}}}, ("lanes", "agent:*", "limit"), ">= 1"),
        (
            {"defaults": {"timeouts": {"heartbeat": -1}}},
            ("defaults", "timeouts", "heartbeat"),
            "a duration must be positive",
        ),
        (
            {"defaults": {"retry": {"jitter": 2}}},
            ("defaults", "retry", "jitter"),
            "between 0 and 1",
        ),
        ({"defaults": {"queue": 5}}, ("defaults", "queue"), "not a valid name"),
        ({"roles": {"bot": {"adhoc": "yes"}}}, ("roles", "bot", "adhoc"), "true or false"),
        ({"roles": {"bot": {"task_types": "*"}}}, ("roles", "bot", "task_types"), "strings"),
    ],
)
def test_a_bad_value_is_refused_with_its_key_path_and_reason(
    config: dict[str, Any], where: tuple[str, ...], reason: str
) -> None:
    error = refusal(config)

    assert error.where == where
    assert reason in error.reason


def test_an_invalid_json_schema_is_refused() -> None:
    error = refusal(echo(schema={"type": "banana"}))

    assert error.where == ("task_types", "echo", "schema")
    assert error.reason.startswith("not a valid JSON schema: ")
    assert "banana" in error.reason


def test_an_unknown_role_in_a_task_type_is_refused() -> None:
    error = refusal(echo(roles=["coder", "janitor"]))

    assert error.where == ("task_types", "echo", "roles")
    assert error.reason == "unknown role 'janitor'"


def test_a_custom_role_may_be_named_by_a_task_type() -> None:
    registry = build_registry({"roles": {"janitor": {}}, **echo(roles=["janitor"])})

    assert registry.task_types["echo"].roles == ("janitor",)


def test_the_adapter_check_sees_each_task_types_adapter_settings_and_path() -> None:
    seen = []

    def check(adapter: str, settings: dict[str, Any], where: tuple[str, ...]) -> None:
        seen.append((adapter, settings, where))

    build_registry(echo(settings={"callable": "m:f"}), adapter_check=check)

    assert seen == [("python", {"callable": "m:f"}, ("task_types", "echo", "settings"))]


def test_a_refusal_of_the_adapter_check_refuses_the_registry() -> None:
    def check(adapter: str, settings: dict[str, Any], where: tuple[str, ...]) -> None:
        raise ConfigError(f"unknown adapter {adapter!r}", (*where[:-1], "adapter"))

    with pytest.raises(ConfigError, match="unknown adapter 'python'") as caught:
        build_registry(echo(), adapter_check=check)
    assert caught.value.where == ("task_types", "echo", "adapter")


def test_an_infinite_start_to_close_is_refused() -> None:
    error = refusal({"defaults": {"timeouts": {"start_to_close": float("inf")}}})

    assert error.where == ("defaults", "timeouts", "start_to_close")


# -- roles and principals -----------------------------------------------------------------


def test_only_admin_may_enqueue_adhoc_tasks_by_default() -> None:
    roles = build_registry({}).roles

    assert {name for name, role in roles.items() if role.adhoc} == {"admin"}


def test_a_configured_admin_role_keeps_adhoc_unless_it_says_otherwise() -> None:
    registry = build_registry({"roles": {"admin": {"task_types": ["*"]}, "bot": {}}})

    assert registry.roles["admin"].adhoc is True
    assert registry.roles["bot"].adhoc is False


def test_a_role_policy_matches_task_types_and_adapters_by_glob() -> None:
    registry = build_registry(
        {
            "roles": {"critic": {"task_types": ["review.*"], "adapters": ["python", "lua"]}},
            "task_types": {
                "review.code": {"adapter": "python"},
                "review.shell": {"adapter": "shell"},
                "deploy": {"adapter": "python"},
            },
        }
    )
    critic = registry.roles["critic"]

    assert critic.may_enqueue(registry.task_types["review.code"])
    assert not critic.may_enqueue(registry.task_types["review.shell"])
    assert not critic.may_enqueue(registry.task_types["deploy"])


def test_a_principal_with_a_sha256_token_hash_is_accepted() -> None:
    registry = build_registry(
        {"principals": [{"name": "ci", "role": "tester", "token_sha256": TOKEN_HASH}]}
    )

    [principal] = registry.principals
    assert (principal.name, principal.role, principal.token_sha256) == ("ci", "tester", TOKEN_HASH)


@pytest.mark.parametrize(
    "token", ["s3cret-token", TOKEN_HASH.upper(), TOKEN_HASH[:-1], TOKEN_HASH + "0"]
)
def test_a_principal_with_anything_but_a_sha256_hex_digest_is_refused(token: str) -> None:
    error = refusal(
        {
            "principals": [
                {"name": "ci", "role": "tester", "token_sha256": TOKEN_HASH},
                {"name": "dev", "role": "coder", "token_sha256": token},
            ]
        }
    )

    assert error.where == ("principals", "1", "token_sha256")
    assert "never the token itself" in error.reason


def test_a_principal_with_an_unknown_role_is_refused() -> None:
    error = refusal({"principals": [{"name": "ci", "role": "root", "token_sha256": TOKEN_HASH}]})

    assert error.where == ("principals", "0", "role")
    assert error.reason == "unknown role 'root'"


def test_a_principal_without_a_name_is_refused() -> None:
    error = refusal({"principals": [{"role": "admin", "token_sha256": TOKEN_HASH}]})

    assert error.where == ("principals", "0", "name")
    assert error.reason == "a principal needs 'name' (a string)"


def test_principals_that_are_not_an_array_are_refused() -> None:
    error = refusal({"principals": {"name": "ci"}})

    assert error.where == ("principals",)


# -- lanes --------------------------------------------------------------------------------


def test_lane_limits_are_matched_by_glob_and_default_to_one() -> None:
    registry = build_registry({"lanes": {"agent:*": {}, "batch:*": {"limit": 5}}})

    assert registry.lane_limit("agent:42") == 1
    assert registry.lane_limit("batch:nightly") == 5
    assert registry.lane_limit("batch") == 1
    assert registry.lane_limit("other:1") == 1


def test_a_lane_glob_matches_case_sensitively() -> None:
    registry = build_registry({"lanes": {"batch:*": {"limit": 5}}})

    assert registry.lane_limit("BATCH:1") == 1


# -- immutability -------------------------------------------------------------------------


def test_the_registry_and_its_entries_cannot_be_reassigned() -> None:
    registry = build_registry(echo())

    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.default_queue = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.task_types["echo"].adapter = "shell"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.roles["admin"].adhoc = False  # type: ignore[misc]


def test_the_registry_tables_cannot_be_changed_after_it_is_built() -> None:
    registry = build_registry(echo())

    with pytest.raises(TypeError):
        registry.task_types["sneaky"] = registry.task_types["echo"]  # type: ignore[index]


@pytest.mark.parametrize("priority", [1001, -1001, 2**40])
def test_a_task_type_priority_outside_the_range_is_refused(priority: int) -> None:
    error = refusal(echo(priority=priority))
    assert "priority must be from -1000 to 1000" in str(error)
    assert error.where == ("task_types", "echo", "priority")
