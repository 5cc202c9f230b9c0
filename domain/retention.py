"""Retention: how long an ended task (and a refused request) stays in the live log, and the
pure rule of which ones are past it.

The ``[retention]`` table of the configuration file::

    [retention]
    succeeded = "30d"          # per terminal state; a state not named is kept for ever
    failed = "90d"
    cancelled = "90d"
    skipped = "90d"
    access_denied = "90d"      # AccessDenied events (refused requests)
    archive_dir = "/var/lib/ledger/archive"
    segment_events = 50000     # events per archived segment file at most
    archive_every = "1h"       # a worker node archives this often (optional)

A task is past retention once it has ended (``succeeded``, ``failed``, ``cancelled``,
``skipped``) and its end is older than its state's age. Ages are durations as everywhere
(``domain/durations.py``), here up to ten years. The archive itself is
``adapters/retention/`` (``docs/retention.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from execution_ledger.domain.durations import parse_duration
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.task import TERMINAL_STATES

MAX_RETENTION_SECONDS = 3660 * 86400.0  # ten years
DEFAULT_SEGMENT_EVENTS = 50_000
ENDED_STATES = tuple(sorted(str(s) for s in TERMINAL_STATES))
_KEYS = {*ENDED_STATES, "access_denied", "archive_dir", "segment_events", "archive_every"}


@dataclass(frozen=True)
class RetentionPolicy:
    """Ages (seconds) per terminal state and for access denials; where segments go."""

    ages: Mapping[str, float] = field(default_factory=dict)
    access_denied: float | None = None
    archive_dir: str | None = None
    segment_events: int = DEFAULT_SEGMENT_EVENTS
    archive_every: float | None = None

    def cutoffs(self, now: datetime) -> dict[str, datetime]:
        """Per terminal state with an age: tasks of that state that ended before this
        moment are past retention."""
        return {state: now - timedelta(seconds=age) for state, age in self.ages.items()}

    def denial_cutoff(self, now: datetime) -> datetime | None:
        """Refused requests stamped before this moment are past retention (None: kept)."""
        if self.access_denied is None:
            return None
        return now - timedelta(seconds=self.access_denied)

    def is_past(self, state: str, finished_at: datetime | None, now: datetime) -> bool:
        """Whether a task in ``state`` that ended at ``finished_at`` is past retention."""
        age = self.ages.get(state)
        if age is None or finished_at is None:
            return False
        return finished_at < now - timedelta(seconds=age)


def build_retention(section: object) -> RetentionPolicy | None:
    """The checked ``[retention]`` table (None when the file has none)."""
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ConfigError("expected a table", ("retention",))
    for key in section:
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise ConfigError(f"unknown key {key!r} (expected one of: {known})", ("retention", key))
    ages = {
        state: _age(section[state], ("retention", state))
        for state in ENDED_STATES
        if state in section
    }
    denied = section.get("access_denied")
    return RetentionPolicy(
        ages=ages,
        access_denied=None if denied is None else _age(denied, ("retention", "access_denied")),
        archive_dir=_archive_dir(section.get("archive_dir")),
        segment_events=_segment_events(section.get("segment_events", DEFAULT_SEGMENT_EVENTS)),
        archive_every=_every(section.get("archive_every")),
    )


def _age(value: Any, where: tuple[str, ...]) -> float:
    return parse_duration(value, where, maximum=MAX_RETENTION_SECONDS)


def _archive_dir(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise ConfigError(f"expected a directory path, got {value!r}", ("retention", "archive_dir"))
    return value


def _segment_events(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
        raise ConfigError(
            f"expected a whole number from 1 to 10000000, got {value!r}",
            ("retention", "segment_events"),
        )
    return value


def _every(value: Any) -> float | None:
    if value is None:
        return None
    return parse_duration(value, ("retention", "archive_every"))
