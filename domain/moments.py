"""A moment as the ways in accept it: an ISO 8601 time with a zone, or a duration before now
(``2h``: two hours ago). One rule for ``ledger simulate --since``, ``ledger audit log
--until`` and ``POST /v1/simulations``' ``since`` / ``until``."""

from __future__ import annotations

from datetime import datetime, timedelta

from execution_ledger.domain.durations import parse_duration
from execution_ledger.domain.errors import ConfigError, InvalidQuery


def parse_moment(text: str | None, option: str, now: datetime) -> datetime | None:
    """An ISO 8601 time with zone, or a duration before ``now``; None for None."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return now - timedelta(seconds=parse_duration(text))
        except ConfigError:
            raise InvalidQuery(
                f"{option}: give an ISO 8601 time with zone or a duration (e.g. 2h): {text!r}"
            ) from None
    if moment.tzinfo is None:
        raise InvalidQuery(f"{option} needs a time zone (e.g. 2026-01-01T09:00:00+00:00)")
    return moment
