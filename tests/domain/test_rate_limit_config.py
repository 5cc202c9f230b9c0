"""Rate limits and fair keys in the registry: what a ``[rate_limits.NAME]`` table and a
queue's ``fair_key`` become, every refusal naming its key path, and what an enqueue is
given (its fair key) or refused (args a covering limit's key cannot be filled from)."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from typing import Any
from uuid import UUID

import pytest

from execution_ledger.domain.errors import ConfigError, SchemaViolation
from execution_ledger.domain.rate_limits import RateLimit, format_period
from execution_ledger.domain.registry import build_registry
from execution_ledger.domain.submission import Requester, SubmissionContext, TaskRequest, plan_tasks

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def config(**rate_limits: Any) -> dict[str, Any]:
    return {
        "queues": {"mail": {"fair_key": "tenant:{tenant}"}, "bulk": {}},
        "task_types": {
            "send": {"adapter": "python", "queue": "mail"},
            "echo": {"adapter": "python"},
        },
        "rate_limits": rate_limits,
    }


def refusal(**rate_limits: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        build_registry(config(**rate_limits))
    return caught.value


def test_a_rate_limit_table_becomes_a_rate_limit_with_its_period_in_seconds() -> None:
    registry = build_registry(
        config(
            per_tenant={"task_type": "send", "key": "tenant:{tenant}", "limit": 10, "period": "1m"},
            bulk_queue={"queue": "bulk", "limit": 100, "period": 3600},
        )
    )
    assert registry.rate_limits["per_tenant"] == RateLimit(
        name="per_tenant", limit=10, period=60.0, task_type="send", key="tenant:{tenant}"
    )
    assert registry.rate_limits["bulk_queue"].queue == "bulk"
    assert registry.rate_limits["bulk_queue"].describe() == "100 per 1h"
    assert registry.queue("mail").fair_key == "tenant:{tenant}"
    assert registry.queue("bulk").fair_key is None


def test_no_rate_limits_configured_is_an_empty_mapping() -> None:
    assert dict(build_registry(config()).rate_limits) == {}


@pytest.mark.parametrize(
    ("spec", "where", "message"),
    [
        ({"period": "1m", "queue": "bulk"}, ("rate_limits", "r", "limit"), "needs 'limit'"),
        ({"limit": 5, "queue": "bulk"}, ("rate_limits", "r", "period"), "needs 'period'"),
        ({"limit": 0, "period": "1m", "queue": "bulk"}, ("rate_limits", "r", "limit"), "from 1"),
        ({"limit": "5", "period": "1m", "queue": "bulk"}, ("rate_limits", "r", "limit"), "'5'"),
        ({"limit": True, "period": "1m", "queue": "bulk"}, ("rate_limits", "r", "limit"), "True"),
        (
            {"limit": 2_000_000, "period": "1m", "queue": "bulk"},
            ("rate_limits", "r", "limit"),
            "1000000",
        ),
        ({"limit": 5, "period": "soon", "queue": "bulk"}, ("rate_limits", "r", "period"), "soon"),
        ({"limit": 5, "period": -1, "queue": "bulk"}, ("rate_limits", "r", "period"), "positive"),
        ({"limit": 5, "period": "1m"}, ("rate_limits", "r"), "a task_type, a queue or a key"),
        (
            {"limit": 5, "period": "1m", "task_type": "nope"},
            ("rate_limits", "r", "task_type"),
            "unknown task type 'nope'",
        ),
        (
            {"limit": 5, "period": "1m", "queue": "nope"},
            ("rate_limits", "r", "queue"),
            "unknown queue 'nope'",
        ),
        (
            {"limit": 5, "period": "1m", "key": "tenant"},
            ("rate_limits", "r", "key"),
            "names no argument",
        ),
        (
            {"limit": 5, "period": "1m", "key": "t:{tenant}}"},
            ("rate_limits", "r", "key"),
            "brace",
        ),
        ({"limit": 5, "period": "1m", "key": 7}, ("rate_limits", "r", "key"), "key template"),
        (
            {"limit": 5, "period": "1m", "queue": "bulk", "burst": 2},
            ("rate_limits", "r", "burst"),
            "unknown key 'burst'",
        ),
    ],
)
def test_a_bad_rate_limit_is_refused_naming_its_key_path(
    spec: dict[str, Any], where: tuple[str, ...], message: str
) -> None:
    error = refusal(r=spec)
    assert error.where == where
    assert message in str(error)


def test_a_rate_limit_that_is_not_a_table_or_has_a_bad_name_is_refused() -> None:
    assert refusal(r=5).where == ("rate_limits", "r")
    assert refusal(**{"bad name": {"limit": 1, "period": 1, "queue": "bulk"}}).where == (
        "rate_limits",
        "bad name",
    )
    with pytest.raises(ConfigError) as caught:
        build_registry({**config(), "rate_limits": [1]})
    assert caught.value.where == ("rate_limits",)


def test_a_bad_fair_key_is_refused_naming_its_queue() -> None:
    with pytest.raises(ConfigError, match="names no argument") as caught:
        build_registry({"queues": {"mail": {"fair_key": "tenant"}}})
    assert caught.value.where == ("queues", "mail", "fair_key")


def plan(registry_config: dict[str, Any], request: TaskRequest) -> Any:
    ids = count(1)
    context = SubmissionContext(
        registry=build_registry(registry_config),
        requester=Requester("alice", "admin"),
        now=NOW,
        new_id=lambda: UUID(int=next(ids)),
    )
    return plan_tasks(context, [request], {})[0]


def test_a_task_of_a_fair_queue_gets_its_fair_key_and_others_none() -> None:
    assert plan(config(), TaskRequest("send", {"tenant": "a"})).fair_key == "tenant:a"
    # Args without the field: the keyless group, not a refusal.
    assert plan(config(), TaskRequest("send", {})).fair_key == ""
    assert plan(config(), TaskRequest("echo", {"tenant": "a"})).fair_key is None


def test_an_enqueue_whose_args_cannot_fill_a_covering_limit_key_is_refused() -> None:
    limited = config(per_tenant={"task_type": "send", "key": "tenant:{tenant}", "limit": 1,
                                 "period": "1h"})
    with pytest.raises(SchemaViolation, match=r"rate limit 'per_tenant'.*'tenant'"):
        plan(limited, TaskRequest("send", {"to": "x"}))
    # A type the limit does not cover is not concerned.
    assert plan(limited, TaskRequest("echo", {})).type_name == "echo"


def test_a_limit_with_only_a_key_covers_the_tasks_that_have_its_fields() -> None:
    limited = config(per_account={"key": "account:{account}", "limit": 1, "period": "1h"})
    assert plan(limited, TaskRequest("send", {"tenant": "a"})).type_name == "send"
    limit = build_registry(limited).rate_limits["per_account"]
    assert limit.covers("echo", "default") and limit.covers("send", "mail")
    assert limit.bucket({"account": 7}) == "account:7"
    assert limit.bucket({"tenant": "a"}) is None


@pytest.mark.parametrize(
    ("seconds", "text"), [(3600.0, "1h"), (90.0, "90s"), (120.0, "2m"), (0.5, "500ms"),
                          (86400.0, "1d"), (1.5, "1.5s")]
)
def test_periods_are_shown_in_their_largest_whole_unit(seconds: float, text: str) -> None:
    assert format_period(seconds) == text
