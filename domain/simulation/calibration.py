"""Calibrating the simulation to the system that made the log: how long a real start takes.

The simulation decides starts in continuous time; a real worker needs a wake-up, a claim
round and a hand-off to its executor. On a quiet machine that is a few milliseconds, on a
loaded one tens. Both latencies are taken from the window itself, from a simulation pass
without them (``latencies``):

- *start latency*: the tasks that pass starts the moment they are due had a free slot, so
  their recorded wait is that latency alone;
- *hop latency*: a task that waited for a slot starts when an attempt ends; its recorded
  start minus that attempt's recorded end is one real hop.

Each is the median of its samples (0 when there are none).
"""

from __future__ import annotations

from collections.abc import Iterable

from execution_ledger.domain.simulation.engine import TaskOutcome

IMMEDIATE = 1e-9  # seconds: "started the moment it was due"


def latencies(outcomes: Iterable[TaskOutcome]) -> tuple[float, float]:
    """(start latency, hop latency) from the outcomes of a pass without latency."""
    starts: list[float] = []
    hops: list[float] = []
    for o in outcomes:
        recorded_start = o.submission.first_start
        if o.first_start is None or o.due is None or recorded_start is None:
            continue
        if o.first_start - o.due <= IMMEDIATE:
            wait = o.submission.recorded_wait
            if wait is not None:
                starts.append(wait)
        elif o.slot_from is not None:
            hops.append(max(0.0, recorded_start - o.slot_from))
    return median(starts), median(hops)


def median(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
