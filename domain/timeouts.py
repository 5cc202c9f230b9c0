"""One timeout policy for every adapter: the five kinds and how they are resolved.

``signal_wait`` bounds how long a task waits for the signals its type needs before it runs
(from its enqueue, or its unblock); the watchdog fails it (final, never retried).

Resolution order, per kind: task override, else task type, else queue, else global default.
``start_to_close`` is always finite; the others may be ``None`` (no limit).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

from execution_ledger.domain.durations import parse_duration
from execution_ledger.domain.errors import ConfigError


class TimeoutKind(StrEnum):
    SCHEDULE_TO_START = "schedule_to_start"
    START_TO_CLOSE = "start_to_close"
    HEARTBEAT = "heartbeat"
    SCHEDULE_TO_CLOSE = "schedule_to_close"
    SIGNAL_WAIT = "signal_wait"


@dataclass(frozen=True)
class TimeoutOverrides:
    """Timeouts set at one level (task, type, queue); ``None`` means "not set here"."""

    schedule_to_start: float | None = None
    start_to_close: float | None = None
    heartbeat: float | None = None
    schedule_to_close: float | None = None
    signal_wait: float | None = None

    @classmethod
    def from_mapping(cls, data: Any, where: tuple[str, ...] = ()) -> TimeoutOverrides:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError("timeouts must be a table of durations", where)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown timeout {unknown[0]!r} (known: {', '.join(sorted(known))})",
                (*where, unknown[0]),
            )
        return cls(**{k: parse_duration(v, (*where, k)) for k, v in data.items()})


@dataclass(frozen=True)
class Timeouts:
    """Resolved timeouts of one task, in seconds."""

    start_to_close: float
    schedule_to_start: float | None = None
    heartbeat: float | None = None
    schedule_to_close: float | None = None
    signal_wait: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        """Every kind; ``signal_wait`` only when set (events stored before it had no such
        key, and a task that waits for no signal keeps its old shape)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if data["signal_wait"] is None:
            del data["signal_wait"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timeouts:
        values: dict[str, Any] = {f.name: data.get(f.name) for f in fields(cls)}
        return cls(**values)


@functools.lru_cache(maxsize=4096)
def resolve_timeouts(*levels: TimeoutOverrides, default: Timeouts) -> Timeouts:
    """Resolve each kind from the most specific level that sets it, else ``default``
    (levels and result are frozen, so one resolution serves every task that shares them)."""
    resolved = default
    for level in reversed(levels):
        values = {f.name: getattr(level, f.name) for f in fields(level)}
        resolved = replace(resolved, **{k: v for k, v in values.items() if v is not None})
    return resolved
