"""What history suggests: a start_to_close timeout learned from a type's past run times."""

from __future__ import annotations

import math

MIN_SUCCESSES = 20  # fewer successful runs than this say too little to suggest anything
HEADROOM = 2.0  # the suggestion leaves the slowest 1% of runs twice their time
FLOOR_SECONDS = 1.0
CEILING_SECONDS = 366 * 86400.0


def suggest_start_to_close(successes: int, p99_run_seconds: float | None) -> float | None:
    """A timeout that the slow runs of the past would have met with room to spare, in whole
    seconds; None while there is too little history."""
    if successes < MIN_SUCCESSES or p99_run_seconds is None:
        return None
    seconds = math.ceil(p99_run_seconds * HEADROOM)
    return min(CEILING_SECONDS, max(FLOOR_SECONDS, float(seconds)))
