"""Rate limits and fair keys: "N starts per period" for a task type, a queue or a key
template over the args, and the key a fair queue takes its turns by.

A ``[rate_limits.NAME]`` table becomes a frozen ``RateLimit`` (``build_rate_limits``; every
error a ``ConfigError`` naming the key path). Which tasks it covers: those of its
``task_type`` (if given) in its ``queue`` (if given); its ``key`` template (``tenant:{tenant}``,
each ``{name}`` an argument) splits them into buckets that each allow ``limit`` starts per
``period``; without a template the whole scope is one bucket. In a limit's ``task_type`` or
``queue``, a task whose args lack a field of its template is refused at enqueue
(``check_rate_limit_args``), so no task slips past a limit it is subject to; a limit with only
a ``key`` covers the tasks, of any type and queue, whose args have every field of it. The
claim enforces the counts (``adapters/postgres/rate_limits.py``).

A queue's ``fair_key`` template uses the same syntax (``render_key``); a task whose args lack
a field is in the queue's keyless group rather than refused (fairness is not a guarantee
anyone relies on for safety).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from execution_ledger.domain.durations import parse_duration
from execution_ledger.domain.errors import ConfigError, SchemaViolation

MAX_LIMIT = 1_000_000
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_KEYS = {"limit", "period", "task_type", "queue", "key"}


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` starts per ``period`` seconds in each bucket of its scope."""

    name: str
    limit: int
    period: float
    task_type: str | None = None
    queue: str | None = None
    key: str | None = None  # a template over the args; None: one bucket

    def covers(self, type_name: str, queue: str) -> bool:
        return (self.task_type is None or self.task_type == type_name) and (
            self.queue is None or self.queue == queue
        )

    def bucket(self, args: Mapping[str, Any]) -> str | None:
        """The bucket a task with these args counts in; None when a field is missing."""
        return "" if self.key is None else render_key(self.key, args)

    def describe(self) -> str:
        """``10 per 1m``, as shown to users."""
        return f"{self.limit} per {format_period(self.period)}"


def render_key(template: str, args: Mapping[str, Any]) -> str | None:
    """Fill ``tenant:{tenant}`` from the args; None when one of its fields is missing."""
    missing = [name for name in template_fields(template) if name not in args]
    if missing:
        return None
    return _FIELD.sub(lambda match: str(args[match.group(1)]), template)


def template_fields(template: str) -> list[str]:
    return _FIELD.findall(template)


def check_key_template(value: Any, where: tuple[str, ...]) -> str:
    """A key template: a string of at most 200 characters naming at least one argument as
    ``{name}``, with no other braces."""
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise ConfigError(
            f"expected a key template such as 'tenant:{{tenant}}', got {value!r}", where
        )
    if not template_fields(value):
        raise ConfigError(f"the key template {value!r} names no argument (as {{name}})", where)
    if "{" in _FIELD.sub("", value) or "}" in _FIELD.sub("", value):
        raise ConfigError(
            f"the key template {value!r} has a brace that is not part of a {{name}} field", where
        )
    return value


def limits_covering(
    limits: Mapping[str, RateLimit], type_name: str, queue: str
) -> list[RateLimit]:
    return [limit for limit in limits.values() if limit.covers(type_name, queue)]


def check_rate_limit_args(
    limits: Mapping[str, RateLimit], type_name: str, queue: str, args: Mapping[str, Any]
) -> None:
    """Refuse a task in the scope of a limit (its type or queue) whose args cannot name its
    bucket; a limit with only a key covers just the tasks that have its fields."""
    for limit in limits_covering(limits, type_name, queue):
        scoped = limit.task_type is not None or limit.queue is not None
        if scoped and limit.key is not None and limit.bucket(args) is None:
            missing = [name for name in template_fields(limit.key) if name not in args]
            raise SchemaViolation(
                f"the rate limit {limit.name!r} ({limit.key!r}) needs the argument "
                f"{missing[0]!r}"
            )


def build_rate_limits(
    data: Mapping[str, Any], task_types: Collection[str], queues: Collection[str]
) -> dict[str, RateLimit]:
    """The ``[rate_limits.NAME]`` tables, checked against the known types and queues."""
    return {
        name: _rate_limit(name, spec, ("rate_limits", name), task_types, queues)
        for name, spec in data.items()
    }


def _rate_limit(
    name: str,
    spec: Any,
    where: tuple[str, ...],
    task_types: Collection[str],
    queues: Collection[str],
) -> RateLimit:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{name!r} is not a valid name (letters, digits, and _ . : - ; at most 100)", where
        )
    if not isinstance(spec, Mapping):
        raise ConfigError("expected a table", where)
    for key in spec:
        if key not in _KEYS:
            raise ConfigError(
                f"unknown key {key!r} (expected one of: {', '.join(sorted(_KEYS))})", (*where, key)
            )
    for key in ("limit", "period"):
        if key not in spec:
            raise ConfigError(f"a rate limit needs {key!r}", (*where, key))
    if not any(key in spec for key in ("task_type", "queue", "key")):
        raise ConfigError("a rate limit needs a task_type, a queue or a key", where)
    return RateLimit(
        name=name,
        limit=_limit(spec["limit"], (*where, "limit")),
        period=parse_duration(spec["period"], (*where, "period")),
        task_type=_known(spec.get("task_type"), task_types, "task type", (*where, "task_type")),
        queue=_known(spec.get("queue"), queues, "queue", (*where, "queue")),
        key=None if "key" not in spec else check_key_template(spec["key"], (*where, "key")),
    )


def _limit(value: Any, where: tuple[str, ...]) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LIMIT:
        raise ConfigError(f"expected an integer from 1 to {MAX_LIMIT}, got {value!r}", where)
    return value


def _known(value: Any, known: Collection[str], what: str, where: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in known:
        raise ConfigError(f"unknown {what} {value!r} (known: {', '.join(sorted(known))})", where)
    return value


def format_period(seconds: float) -> str:
    """``3600.0`` -> ``1h``, ``90.0`` -> ``90s``, ``0.5`` -> ``500ms``."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"
