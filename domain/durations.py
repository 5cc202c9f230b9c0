"""Parsing of durations written in configuration and requests ("90", "30s", "5m", "1h30m")."""

from __future__ import annotations

import math
import re

from execution_ledger.domain.errors import ConfigError

MAX_DURATION_SECONDS = 366 * 86400.0
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(
    value: object, where: tuple[str, ...] = (), maximum: float = MAX_DURATION_SECONDS
) -> float:
    """Return seconds for a number of seconds or a string such as ``"1h30m"``; refuse <= 0
    and more than ``maximum`` (a year unless the caller says otherwise)."""
    if isinstance(value, bool):
        raise ConfigError(f"expected a duration, got {value!r}", where)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value.strip(), where)
    else:
        raise ConfigError(f"expected a duration, got {value!r}", where)
    if not math.isfinite(seconds) or not seconds > 0:
        raise ConfigError(f"a duration must be positive and finite, got {value!r}", where)
    if seconds > maximum:
        limit = "a year" if maximum == MAX_DURATION_SECONDS else f"{maximum / 86400:g} days"
        raise ConfigError(f"a duration may be at most {limit}, got {value!r}", where)
    return seconds


def _parse_text(text: str, where: tuple[str, ...]) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(
            f"cannot read duration {text!r} (use seconds or e.g. '500ms', '30s', '5m', '1h30m')",
            where,
        )
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
