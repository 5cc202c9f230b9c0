"""Retry policy: attempts budget, exponential back-off with cap and jitter, error classes."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from execution_ledger.domain.durations import parse_duration
from execution_ledger.domain.errors import ConfigError

MAX_ATTEMPTS = 1000


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_initial: float = 1.0
    backoff_multiplier: float = 2.0
    backoff_max: float = 300.0
    jitter: float = 0.1
    non_retryable: tuple[str, ...] = ()

    def backoff(self, attempt: int, jitter_draw: float) -> float:
        """Delay before the attempt after ``attempt`` (1-based).

        ``jitter_draw`` is a number in [0, 1) supplied by the caller (randomness is I/O);
        the delay is spread by +/- ``jitter`` of itself and never exceeds ``backoff_max``.
        """
        try:
            growth = self.backoff_multiplier ** (attempt - 1)
        except OverflowError:
            growth = math.inf
        base = min(self.backoff_max, self.backoff_initial * growth)
        spread = base * self.jitter * (2.0 * jitter_draw - 1.0)
        return max(0.0, min(self.backoff_max, base + spread))

    def allows_retry(self, attempts_made: int, error_class: str | None, retryable: bool) -> bool:
        if not retryable or attempts_made >= self.max_attempts:
            return False
        return error_class not in self.non_retryable

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["non_retryable"] = list(self.non_retryable)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetryPolicy:
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        if "non_retryable" in values:
            values["non_retryable"] = tuple(values["non_retryable"])
        return cls(**values)

    def overridden(self, data: Any, where: tuple[str, ...] = ()) -> RetryPolicy:
        """A copy with the keys of a config table applied, each checked."""
        if data is None:
            return self
        if not isinstance(data, dict):
            raise ConfigError("retry must be a table", where)
        values = self.as_dict()
        for key, value in data.items():
            at = (*where, key)
            if key == "max_attempts":
                if (
                    not isinstance(value, int)
                    or isinstance(value, bool)
                    or not 1 <= value <= MAX_ATTEMPTS
                ):
                    raise ConfigError(
                        f"max_attempts must be an integer from 1 to {MAX_ATTEMPTS}", at
                    )
                values[key] = value
            elif key in ("backoff_initial", "backoff_max"):
                values[key] = parse_duration(value, at)
            elif key == "backoff_multiplier":
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 1:
                    raise ConfigError("backoff_multiplier must be a number >= 1", at)
                values[key] = float(value)
            elif key == "jitter":
                if (
                    not isinstance(value, (int, float))
                    or isinstance(value, bool)
                    or not 0 <= value <= 1
                ):
                    raise ConfigError("jitter must be a number between 0 and 1", at)
                values[key] = float(value)
            elif key == "non_retryable":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError("non_retryable must be a list of error class names", at)
                values[key] = value
            else:
                raise ConfigError(f"unknown retry setting {key!r}", at)
        return RetryPolicy.from_dict(values)
