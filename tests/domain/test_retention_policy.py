"""The ``[retention]`` table and the pure rule of which ended tasks are past retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.retention import DEFAULT_SEGMENT_EVENTS, build_retention

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_ages_per_state_and_the_archive_settings() -> None:
    policy = build_retention(
        {
            "succeeded": "30d",
            "failed": "90d",
            "access_denied": "1d",
            "archive_dir": "/var/archive",
            "segment_events": 1000,
            "archive_every": "1h",
        }
    )
    assert policy is not None
    assert policy.ages == {"succeeded": 30 * 86400.0, "failed": 90 * 86400.0}
    assert policy.access_denied == 86400.0
    assert policy.archive_dir == "/var/archive"
    assert policy.segment_events == 1000 and policy.archive_every == 3600.0
    assert policy.cutoffs(NOW) == {
        "succeeded": NOW - timedelta(days=30),
        "failed": NOW - timedelta(days=90),
    }
    assert policy.denial_cutoff(NOW) == NOW - timedelta(days=1)


def test_no_table_no_policy_and_defaults() -> None:
    assert build_retention(None) is None
    policy = build_retention({})
    assert policy is not None
    assert policy.ages == {} and policy.archive_dir is None
    assert policy.segment_events == DEFAULT_SEGMENT_EVENTS
    assert policy.denial_cutoff(NOW) is None


def test_which_tasks_are_past_retention() -> None:
    policy = build_retention({"succeeded": "30d", "cancelled": "7d"})
    assert policy is not None
    old = NOW - timedelta(days=31)
    assert policy.is_past("succeeded", old, NOW)
    assert not policy.is_past("succeeded", NOW - timedelta(days=29), NOW)
    assert not policy.is_past("failed", old, NOW)  # no age for failed: kept for ever
    assert not policy.is_past("running", old, NOW)
    assert not policy.is_past("succeeded", None, NOW)
    assert policy.is_past("cancelled", NOW - timedelta(days=8), NOW)


def test_ages_may_be_years() -> None:
    policy = build_retention({"failed": "1095d"})
    assert policy is not None and policy.ages["failed"] == 1095 * 86400.0


@pytest.mark.parametrize(
    ("section", "message", "where"),
    [
        ({"succeded": "30d"}, "unknown key 'succeded'", ("retention", "succeded")),
        ({"running": "30d"}, "unknown key 'running'", ("retention", "running")),
        ({"failed": "soon"}, "cannot read duration", ("retention", "failed")),
        ({"failed": "0s"}, "positive", ("retention", "failed")),
        ({"failed": "4000d"}, "at most 3660 days", ("retention", "failed")),
        ({"archive_dir": ""}, "directory path", ("retention", "archive_dir")),
        ({"archive_dir": 3}, "directory path", ("retention", "archive_dir")),
        ({"segment_events": 0}, "whole number", ("retention", "segment_events")),
        ({"segment_events": True}, "whole number", ("retention", "segment_events")),
        ({"archive_every": "never"}, "cannot read duration", ("retention", "archive_every")),
    ],
)
def test_bad_settings_are_refused_naming_the_key(
    section: dict[str, object], message: str, where: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        build_retention(section)
    assert error.value.where == where


def test_a_retention_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(ConfigError, match="expected a table"):
        build_retention("30d")
