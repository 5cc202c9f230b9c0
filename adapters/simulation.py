"""``ledger simulate`` and ``POST /v1/simulations``: read a window of the log and run it
through another registry (``domain/simulation/``), without writing anything.

The window is given by times (``since``, ``until``: found in the log by a binary search over
positions, the events' own timestamps) or by positions (``until_position``, as ``ledger
replay --until``). The log is read in pages of decoded events, task events only, and the
submissions flow through the simulation as they complete, so memory holds the tasks in
flight, not the window. The registry the window ran under (the deployment's current one,
unless a recorded version is named) is the baseline: a task that took its type's default
queue or priority there takes the new type's.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from psycopg import sql

from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.domain.errors import InvalidQuery
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.simulation.calibration import latencies
from execution_ledger.domain.simulation.engine import SimSettings, Simulation
from execution_ledger.domain.simulation.report import Report, ReportBuilder
from execution_ledger.domain.simulation.workload import Submission, WorkloadBuilder
from execution_ledger.projections.audit_chain import UndecodableEvent

PAGE = 5000
TASK_TOPIC = "domain.task:Task."
MAX_WORKERS = 10_000
CALIBRATION_TASKS = 20_000  # submissions the latencies are calibrated on


@dataclass(frozen=True)
class SimulationRequest:
    registry: Registry
    registry_text_sha256: str  # of the registry file as given: the report names it
    registry_source: str
    since: datetime | None = None
    until: datetime | None = None
    until_position: int | None = None
    settings: SimSettings = field(default_factory=SimSettings)
    calibrate: bool = True  # take start_latency from the window (a first, quick pass)

    def inputs(self) -> dict[str, Any]:
        """What the report says it was made of (in its canonical JSON)."""
        return {
            "registry_sha256": self.registry_text_sha256,
            "registry_source": self.registry_source,
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "until_position": self.until_position,
            "workers": self.settings.workers,
            "concurrency": self.settings.concurrency,
            "seed": self.settings.seed,
            "start_latency_ms": round(self.settings.start_latency * 1000, 3),
            "hop_latency_ms": round(self.settings.hop_latency * 1000, 3),
            "calibrated": self.calibrate,
        }


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_settings(workers: int, concurrency: int, seed: int) -> SimSettings:
    """The simulated worker pool; a clear error for numbers that mean nothing."""
    if not 1 <= workers <= MAX_WORKERS:
        raise InvalidQuery(f"workers must be between 1 and {MAX_WORKERS}, not {workers}")
    if not 1 <= concurrency <= MAX_WORKERS:
        raise InvalidQuery(f"concurrency must be between 1 and {MAX_WORKERS}, not {concurrency}")
    if not 0 <= seed < 2**63:
        raise InvalidQuery(f"seed must be a whole number from 0, not {seed}")
    return SimSettings(workers=workers, concurrency=concurrency, seed=seed)


def simulate(store: EventStore, request: SimulationRequest, baseline: Registry | None) -> Report:
    """Run the window through ``request.registry``; the report, beside what happened."""
    if request.since and request.until and request.until <= request.since:
        raise InvalidQuery("until must be after since")
    after, stop = window_positions(store, request)
    if request.calibrate:
        start, hop = _latencies(store, request, after, stop)
        settings = replace(request.settings, start_latency=start, hop_latency=hop)
        request = replace(request, settings=settings)
    simulation = Simulation(request.registry, request.settings, baseline=baseline)
    report = ReportBuilder()
    submissions = _submissions(store, WorkloadBuilder(), after, stop, request.since)
    for outcome in simulation.run(submissions):
        report.add(outcome)
    inputs = {**request.inputs(), "first_position": after + 1, "last_position": stop}
    return report.build(simulation.depth, inputs)


def _latencies(
    store: EventStore, request: SimulationRequest, after: int, stop: int
) -> tuple[float, float]:
    """The window's start and hop latencies (``domain/simulation/calibration.py``), from a
    pass through the registry under test without them, over the window's first
    ``CALIBRATION_TASKS`` submissions."""
    settings = replace(request.settings, start_latency=0.0, hop_latency=0.0)
    simulation = Simulation(request.registry, settings)
    submissions = _submissions(store, WorkloadBuilder(), after, stop, request.since)
    return latencies(simulation.run(itertools.islice(submissions, CALIBRATION_TASKS)))


def _submissions(
    store: EventStore, builder: WorkloadBuilder, after: int, stop: int, since: datetime | None
) -> Iterator[Submission]:
    """The window's submissions, in enqueue order, as they complete."""
    for position, event in task_events(store, after, stop):
        if since is not None and _enqueued_before(event, since):
            continue  # a task of before the window: its later events find no submission
        yield from builder.add(event, position)
    yield from builder.finish()


def _enqueued_before(event: Any, since: datetime) -> bool:
    return type(event).__name__ == "TaskEnqueued" and event.timestamp < since


def task_events(store: EventStore, after: int, stop: int) -> Iterator[tuple[int, Any]]:
    """Decoded task events with ``after < position <= stop``, in order, a page at a time."""
    while after < stop:
        page = store.read(after, PAGE, until=stop)
        if not page:
            return
        for recorded in page:
            event = recorded.event
            if isinstance(event, UndecodableEvent):
                continue
            if type(event).__qualname__.startswith("Task."):
                yield recorded.position, event
        after = page[-1].position


def window_positions(store: EventStore, request: SimulationRequest) -> tuple[int, int]:
    """The window as ``(after, stop)`` positions of the log."""
    head = store.head_position()
    stop = head if request.until_position is None else min(head, request.until_position)
    if request.until is not None:
        stop = min(stop, position_at(store, request.until, head))
    after = 0 if request.since is None else position_at(store, request.since, head)
    return after, stop


def position_at(store: EventStore, when: datetime, head: int) -> int:
    """The last position whose event was stored before ``when`` (0 if none): a binary
    search over positions by the stored events' timestamps (nearly ordered as positions)."""
    query = sql.SQL(
        "SELECT (convert_from(state, 'UTF8')::jsonb #>> '{{timestamp,_data_}}')::timestamptz "
        "AS at FROM {} WHERE notification_id >= %s ORDER BY notification_id LIMIT 1"
    ).format(store.table)
    low, high = 0, head  # invariant: events at <= low are before ``when``
    with store.transaction() as cursor:
        while low < high:
            middle = (low + high + 1) // 2
            row = cursor.execute(query, (middle,)).fetchone()
            if row is None or row["at"] is None or row["at"] >= when:
                high = middle - 1
            else:
                low = middle
    return low
