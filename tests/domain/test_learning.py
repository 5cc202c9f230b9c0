"""The start_to_close suggested by a type's history."""

from __future__ import annotations

from execution_ledger.domain.learning import MIN_SUCCESSES, suggest_start_to_close


def test_too_little_history_suggests_nothing() -> None:
    assert suggest_start_to_close(MIN_SUCCESSES - 1, 3.0) is None
    assert suggest_start_to_close(100, None) is None


def test_the_suggestion_is_twice_the_p99_in_whole_seconds_at_least_one() -> None:
    assert suggest_start_to_close(MIN_SUCCESSES, 3.2) == 7.0
    assert suggest_start_to_close(500, 0.01) == 1.0


def test_the_suggestion_never_exceeds_a_year() -> None:
    assert suggest_start_to_close(500, 10**9) == 366 * 86400.0
