"""The retry policy: exponential back-off with a cap and jitter, the attempts budget, error
classes not worth retrying, and the policy as read from configuration."""

from __future__ import annotations

from typing import Any

import pytest

from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.retry import RetryPolicy

NO_JITTER = RetryPolicy(backoff_initial=1.0, backoff_multiplier=2.0, backoff_max=300.0, jitter=0)


# -- back-off -----------------------------------------------------------------------------


def test_the_back_off_doubles_with_each_attempt() -> None:
    delays = [NO_JITTER.backoff(attempt, jitter_draw=0.5) for attempt in range(1, 7)]

    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_the_back_off_grows_by_the_configured_multiplier() -> None:
    policy = RetryPolicy(backoff_initial=0.5, backoff_multiplier=3.0, jitter=0)

    assert [policy.backoff(n, 0.5) for n in (1, 2, 3)] == [0.5, 1.5, 4.5]


def test_the_back_off_is_capped_at_backoff_max() -> None:
    assert NO_JITTER.backoff(9, 0.5) == 256.0
    assert NO_JITTER.backoff(10, 0.5) == 300.0
    assert NO_JITTER.backoff(60, 0.5) == 300.0


def test_a_multiplier_of_one_keeps_the_back_off_constant() -> None:
    policy = RetryPolicy(backoff_initial=5.0, backoff_multiplier=1.0, jitter=0)

    assert {policy.backoff(n, 0.5) for n in range(1, 20)} == {5.0}


@pytest.mark.parametrize(
    ("draw", "delay"), [(0.0, 7.2), (0.5, 8.0), (0.999, 8.0 + 8.0 * 0.1 * 0.998)]
)
def test_jitter_spreads_the_delay_by_at_most_its_fraction(draw: float, delay: float) -> None:
    policy = RetryPolicy(backoff_initial=1.0, backoff_multiplier=2.0, jitter=0.1)

    assert policy.backoff(4, draw) == pytest.approx(delay)
    assert 8.0 * 0.9 <= policy.backoff(4, draw) < 8.0 * 1.1


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_jitter_never_takes_a_capped_delay_above_backoff_max(draw: float) -> None:
    policy = RetryPolicy(backoff_max=300.0, jitter=0.5)

    assert 150.0 <= policy.backoff(30, draw) <= 300.0


def test_full_jitter_never_gives_a_negative_delay() -> None:
    policy = RetryPolicy(backoff_initial=10.0, jitter=1.0)

    assert policy.backoff(1, 0.0) == 0.0
    assert policy.backoff(1, 0.999) == pytest.approx(19.98)


def test_the_back_off_of_a_very_late_attempt_is_backoff_max() -> None:
    policy = RetryPolicy(max_attempts=10_000, jitter=0)

    assert policy.backoff(2_000, 0.5) == policy.backoff_max


# -- whether to retry ---------------------------------------------------------------------


def test_a_retryable_failure_within_the_budget_is_retried() -> None:
    policy = RetryPolicy(max_attempts=3)

    assert policy.allows_retry(1, "ExitCode", retryable=True)
    assert policy.allows_retry(2, "ExitCode", retryable=True)


def test_no_retry_once_max_attempts_have_been_made() -> None:
    policy = RetryPolicy(max_attempts=3)

    assert not policy.allows_retry(3, "ExitCode", retryable=True)
    assert not policy.allows_retry(4, "ExitCode", retryable=True)


def test_a_failure_marked_not_retryable_is_not_retried() -> None:
    assert not RetryPolicy(max_attempts=3).allows_retry(1, "BadResult", retryable=False)


def test_an_error_class_listed_as_non_retryable_is_not_retried() -> None:
    policy = RetryPolicy(max_attempts=3, non_retryable=("ValueError", "SandboxViolation"))

    assert not policy.allows_retry(1, "ValueError", retryable=True)
    assert not policy.allows_retry(1, "SandboxViolation", retryable=True)
    assert policy.allows_retry(1, "TimeoutError", retryable=True)
    assert policy.allows_retry(1, None, retryable=True)


def test_a_single_attempt_policy_never_retries() -> None:
    assert not RetryPolicy(max_attempts=1).allows_retry(1, "Boom", retryable=True)


# -- as stored and as configured ----------------------------------------------------------


def test_a_policy_survives_its_dict_form() -> None:
    policy = RetryPolicy(max_attempts=4, backoff_initial=0.1, jitter=0.3, non_retryable=("X",))

    data = policy.as_dict()

    assert data["non_retryable"] == ["X"]
    assert RetryPolicy.from_dict(data) == policy


def test_a_policy_read_from_a_partial_dict_keeps_the_defaults() -> None:
    assert RetryPolicy.from_dict({"max_attempts": 9}) == RetryPolicy(max_attempts=9)


def test_configuration_overrides_only_the_keys_it_names() -> None:
    base = RetryPolicy(max_attempts=5, jitter=0.2)

    policy = base.overridden(
        {
            "backoff_initial": "250ms",
            "backoff_max": "1m",
            "backoff_multiplier": 1.5,
            "non_retryable": ["ValueError"],
        }
    )

    assert policy == RetryPolicy(
        max_attempts=5,
        backoff_initial=0.25,
        backoff_multiplier=1.5,
        backoff_max=60.0,
        jitter=0.2,
        non_retryable=("ValueError",),
    )
    assert base.overridden(None) is base


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("max_attempts", 0, "max_attempts must be an integer from 1 to 1000"),
        ("max_attempts", 2.5, "max_attempts must be an integer from 1 to 1000"),
        ("max_attempts", True, "max_attempts must be an integer from 1 to 1000"),
        ("backoff_initial", "soon", "cannot read duration"),
        ("backoff_max", 0, "a duration must be positive"),
        ("backoff_multiplier", 0.5, "backoff_multiplier must be a number >= 1"),
        ("backoff_multiplier", "2", "backoff_multiplier must be a number >= 1"),
        ("jitter", 1.5, "jitter must be a number between 0 and 1"),
        ("jitter", -0.1, "jitter must be a number between 0 and 1"),
        ("non_retryable", "ValueError", "non_retryable must be a list"),
        ("non_retryable", [1], "non_retryable must be a list"),
        ("retries", 3, "unknown retry setting 'retries'"),
    ],
)
def test_a_bad_retry_setting_is_refused_with_its_key_path(
    key: str, value: Any, reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        RetryPolicy().overridden({key: value}, ("task_types", "echo", "retry"))

    assert caught.value.where == ("task_types", "echo", "retry", key)


def test_a_retry_setting_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(ConfigError, match="retry must be a table") as caught:
        RetryPolicy().overridden(3, ("defaults", "retry"))

    assert caught.value.where == ("defaults", "retry")
