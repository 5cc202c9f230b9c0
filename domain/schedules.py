"""Cron schedules: which ticks are due, and how missed ticks are caught up after downtime.

Pure rules over ``croniter``; the clock and the last tick already handled are given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
from croniter import croniter

from execution_ledger.domain.errors import ConfigError

MISFIRE_GRACE = timedelta(seconds=30)  # with catch_up = "none", a tick this late still fires
MAX_TICKS_PER_ROUND = 1000


class CatchUp(StrEnum):
    NONE = "none"  # ticks missed by more than the grace are dropped
    LATEST = "latest"  # of the missed ticks, only the most recent fires
    ALL = "all"  # every missed tick fires, up to ``max_catch_up`` (the most recent ones)


class Overlap(StrEnum):
    """What a tick does while the schedule's previous run is still queued or running."""

    ALLOW = "allow"  # enqueue it anyway (runs may overlap)
    SKIP = "skip"  # enqueue nothing; the tick is counted as skipped
    QUEUE_ONE = "queue_one"  # at most one waiting run, started after the running one ends


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str
    task_type: str
    timezone: str = "UTC"
    args: Mapping[str, Any] = field(default_factory=dict)
    catch_up: CatchUp = CatchUp.NONE
    max_catch_up: int = 10
    paused: bool = False
    overlap: Overlap = Overlap.ALLOW

    def next_fire(self, after: datetime) -> datetime:
        """The first tick strictly after ``after`` (in the schedule's time zone)."""
        local = after.astimezone(ZoneInfo(self.timezone))
        tick: datetime = croniter(self.cron, local).get_next(datetime)  # croniter is untyped
        return tick

    def due_ticks(self, last_tick: datetime, now: datetime) -> list[datetime]:
        """Ticks in (last_tick, now] that should fire now, oldest first, by the catch-up rule."""
        missed: list[datetime] = []
        tick = self.next_fire(last_tick)
        while tick <= now and len(missed) < MAX_TICKS_PER_ROUND:
            missed.append(tick)
            tick = self.next_fire(tick)
        if self.catch_up is CatchUp.ALL:
            return missed[-self.max_catch_up :]
        if self.catch_up is CatchUp.LATEST:
            return missed[-1:]
        return [t for t in missed if now - t <= MISFIRE_GRACE]

    def ticks_between(self, since: datetime, until: datetime, bound: int) -> list[datetime]:
        """Ticks in [since, until], oldest first; at most ``bound + 1`` (so a caller can tell
        a range of more than ``bound`` ticks)."""
        ticks: list[datetime] = []
        tick = self.next_fire(since - timedelta(microseconds=1))
        while tick <= until and len(ticks) <= bound:
            ticks.append(tick)
            tick = self.next_fire(tick)
        return ticks

    def idempotency_key(self, tick: datetime) -> str:
        """One key per schedule and tick: every node may try, one task is created."""
        return f"schedule:{self.name}:{tick.astimezone(ZoneInfo('UTC')).isoformat()}"


_KEYS = {
    "cron",
    "timezone",
    "task_type",
    "args",
    "catch_up",
    "max_catch_up",
    "paused",
    "overlap",
}


def build_schedule(
    name: str, spec: Any, where: tuple[str, ...], task_types: Mapping[str, Any]
) -> Schedule:
    if not isinstance(spec, Mapping):
        raise ConfigError("expected a table", where)
    for key in spec:
        if key not in _KEYS:
            raise ConfigError(
                f"unknown key {key!r} (expected one of: {', '.join(sorted(_KEYS))})", (*where, key)
            )
    cron = spec.get("cron")
    if not isinstance(cron, str) or not croniter.is_valid(cron):
        raise ConfigError(f"not a valid cron expression: {cron!r}", (*where, "cron"))
    timezone = spec.get("timezone", "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigError(f"unknown time zone {timezone!r}", (*where, "timezone")) from None
    task_type = spec.get("task_type")
    if not isinstance(task_type, str) or task_type not in task_types:
        raise ConfigError(f"unknown task type {task_type!r}", (*where, "task_type"))
    args = spec.get("args", {})
    if not isinstance(args, Mapping):
        raise ConfigError("args must be a table", (*where, "args"))
    schema = getattr(task_types[task_type], "schema", None)
    if schema is not None:
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(schema).iter_errors(dict(args))
        )
        if error is not None:
            raise ConfigError(
                f"args do not match the schema of {task_type!r}: {error.message}", (*where, "args")
            )
    try:
        catch_up = CatchUp(spec.get("catch_up", "none"))
    except (ValueError, TypeError):
        raise ConfigError(
            "catch_up must be one of: none, latest, all", (*where, "catch_up")
        ) from None
    bound = spec.get("max_catch_up", 10)
    if (
        not isinstance(bound, int)
        or isinstance(bound, bool)
        or not 1 <= bound <= MAX_TICKS_PER_ROUND
    ):
        raise ConfigError(
            f"max_catch_up must be an integer from 1 to {MAX_TICKS_PER_ROUND}",
            (*where, "max_catch_up"),
        )
    paused = spec.get("paused", False)
    if not isinstance(paused, bool):
        raise ConfigError("paused must be true or false", (*where, "paused"))
    try:
        overlap = Overlap(spec.get("overlap", "allow"))
    except (ValueError, TypeError):
        raise ConfigError(
            "overlap must be one of: allow, skip, queue_one", (*where, "overlap")
        ) from None
    return Schedule(name, cron, task_type, timezone, dict(args), catch_up, bound, paused, overlap)
