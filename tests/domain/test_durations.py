"""Durations as written in configuration and requests: plain seconds or unit strings."""

from __future__ import annotations

import pytest

from execution_ledger.domain.durations import parse_duration
from execution_ledger.domain.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("0.25", 0.25),
        ("30s", 30.0),
        ("500ms", 0.5),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("1m500ms", 60.5),
        ("  45s ", 45.0),
    ],
)
def test_a_duration_is_read_as_seconds(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [0, -1, 0.0, "0", "0s", "-5", "-5s"])
def test_a_duration_that_is_not_positive_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match=r"a duration must be positive|cannot read duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    "value", ["soon", "", "5 m", "1h30", "30sec", "h", "1w", "1.s", "nan", "NaN"]
)
def test_text_that_is_not_a_duration_is_refused(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False, None, [1], {"s": 1}])
def test_a_value_of_another_type_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="expected a duration"):
        parse_duration(value)


def test_a_refusal_names_the_key_path_it_was_given() -> None:
    with pytest.raises(ConfigError, match="cannot read duration 'soon'") as caught:
        parse_duration("soon", ("queues", "default", "timeouts", "heartbeat"))

    assert caught.value.where == ("queues", "default", "timeouts", "heartbeat")


@pytest.mark.parametrize(
    "value", [float("inf"), "inf", "infinity", "1e400"], ids=["float", "inf", "infinity", "1e400"]
)
def test_an_infinite_duration_is_refused(value: object) -> None:
    with pytest.raises(ConfigError):
        parse_duration(value)


def test_a_duration_longer_than_a_year_is_refused() -> None:
    with pytest.raises(ConfigError, match="at most a year"):
        parse_duration("1e300")
