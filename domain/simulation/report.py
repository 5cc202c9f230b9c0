"""The simulation's report, beside what actually happened: waits (enqueue, or not-before
time, to first start) per queue and per type at p50/p95/p99 and the worst tasks; timeouts,
retries and refusals with why; throughput and queue depth over time; the busiest lanes; how
many of the window's attempts each learned ``start_to_close`` suggestion would have cut
short; and how closely the simulation reproduced the recorded start order and waits.

``ReportBuilder.add(outcome)`` takes each task's outcome as the simulation ends it;
``build`` gives a ``Report``, whose ``as_json`` is canonical (sorted keys, rounded numbers)
so the same inputs give byte-identical reports, and whose ``text`` is for a terminal.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from execution_ledger.domain.learning import suggest_start_to_close
from execution_ledger.domain.simulation.engine import TaskOutcome
from execution_ledger.domain.simulation.series import Series

WORST = 10
SAMPLE = 50_000  # values kept per measure: exact percentiles up to this many, then a sample
CHART_WIDTH = 60
BARS = " ▁▂▃▄▅▆▇█"


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted ``values`` (None when empty)."""
    if not values:
        return None
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[rank - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class Reservoir:
    """At most ``SAMPLE`` of the values added, a uniform sample of them all (a seeded draw,
    so the same values give the same sample): memory stays flat over any window."""

    def __init__(self, seed: int = 0) -> None:
        self.values: list[Any] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def append(self, value: Any) -> None:
        self.seen += 1
        if len(self.values) < SAMPLE:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < SAMPLE:
            self.values[slot] = value


def _spread(waits: Reservoir) -> dict[str, Any]:
    ordered = sorted(waits.values)
    return {
        "tasks": waits.seen,
        "p50_ms": _ms(percentile(ordered, 50)),
        "p95_ms": _ms(percentile(ordered, 95)),
        "p99_ms": _ms(percentile(ordered, 99)),
    }


@dataclass
class _Waits:
    simulated: Reservoir = field(default_factory=Reservoir)
    recorded: Reservoir = field(default_factory=Reservoir)


@dataclass
class ReportBuilder:
    """Collects the outcomes; memory: bounded samples per measure (``Reservoir``), counts
    per time bucket and per lane."""

    by_queue: dict[str, _Waits] = field(default_factory=lambda: defaultdict(_Waits))
    by_type: dict[str, _Waits] = field(default_factory=lambda: defaultdict(_Waits))
    finals: Counter[str] = field(default_factory=Counter)
    recorded_finals: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    recorded_retries: int = 0
    rate_limited: int = 0
    rate_limited_seconds: float = 0.0
    ended: Series = field(default_factory=lambda: Series(lambda a, b: a + b))
    lanes: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0, 0.0]))
    worst: list[tuple[float, str, str, str]] = field(default_factory=list)
    starts: Reservoir = field(default_factory=Reservoir)
    successes: dict[str, Reservoir] = field(default_factory=lambda: defaultdict(Reservoir))
    attempt_times: dict[str, Reservoir] = field(default_factory=lambda: defaultdict(Reservoir))

    def add(self, outcome: TaskOutcome) -> None:
        sub = outcome.submission
        self.finals[outcome.final] += 1
        self.recorded_finals[sub.final or "open"] += 1
        if outcome.why and outcome.final != "succeeded":
            self.reasons[f"{outcome.final}: {outcome.why}"] += 1
        self.retries += outcome.retries
        self.recorded_retries += max(0, len(sub.attempts) - 1)
        if outcome.rate_limited > 0:
            self.rate_limited += 1
            self.rate_limited_seconds += outcome.rate_limited
        for attempt in sub.attempts:
            if attempt.run_time is not None:
                self.attempt_times[sub.type_name].append(attempt.run_time)
                if attempt.outcome == "succeeded":
                    self.successes[sub.type_name].append(attempt.run_time)
        if outcome.ended is not None and outcome.final != "open":
            self.ended.add(outcome.ended, 1.0)
        recorded_wait = sub.recorded_wait
        if recorded_wait is not None:
            self.by_queue[sub.queue].recorded.append(recorded_wait)
            self.by_type[sub.type_name].recorded.append(recorded_wait)
        if outcome.first_start is None or outcome.due is None:
            return
        wait = max(0.0, outcome.first_start - outcome.due)
        self.by_queue[outcome.queue].simulated.append(wait)
        self.by_type[sub.type_name].simulated.append(wait)
        if outcome.lane is not None:
            lane = self.lanes[outcome.lane]
            lane[0] += 1
            lane[1] += wait
        entry = (wait, str(sub.task_id), sub.type_name, outcome.queue)
        if len(self.worst) < WORST:
            heapq.heappush(self.worst, entry)
        else:
            heapq.heappushpop(self.worst, entry)
        if sub.first_start is not None and recorded_wait is not None:
            self.starts.append((sub.first_start, outcome.first_start, recorded_wait, wait))

    def build(self, depth: Series, inputs: Mapping[str, Any]) -> Report:
        return Report(
            {
                "inputs": dict(inputs),
                "tasks": sum(self.finals.values()),
                "outcomes": {
                    "simulated": dict(sorted(self.finals.items())),
                    "recorded": dict(sorted(self.recorded_finals.items())),
                    "why": dict(sorted(self.reasons.items())),
                    "retries": {"simulated": self.retries, "recorded": self.recorded_retries},
                    "rate_limited": {
                        "tasks": self.rate_limited,
                        "seconds": round(self.rate_limited_seconds, 3),
                    },
                },
                "waits_by_queue": self._waits(self.by_queue),
                "waits_by_type": self._waits(self.by_type),
                "worst": [
                    {"task_id": t, "type": ty, "queue": q, "wait_ms": _ms(w)}
                    for w, t, ty, q in sorted(self.worst, reverse=True)
                ],
                "tasks_ended": self.ended.as_json(),
                "queue_depth": depth.as_json(),
                "busiest_lanes": self._lanes(),
                "learned_timeouts": self._learned(),
                "fidelity": self._fidelity(),
            }
        )

    @staticmethod
    def _waits(groups: Mapping[str, _Waits]) -> dict[str, Any]:
        return {
            name: {"simulated": _spread(w.simulated), "recorded": _spread(w.recorded)}
            for name, w in sorted(groups.items())
        }

    def _lanes(self) -> list[dict[str, Any]]:
        ranked = sorted(self.lanes.items(), key=lambda kv: (-kv[1][1], kv[0]))[:WORST]
        return [
            {"lane": lane, "tasks": int(count), "total_wait_ms": _ms(total)}
            for lane, (count, total) in ranked
        ]

    def _learned(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for type_name in sorted(self.attempt_times):
            successes = self.successes.get(type_name) or Reservoir()
            ok = sorted(successes.values)
            suggestion = suggest_start_to_close(successes.seen, percentile(ok, 99))
            times = self.attempt_times[type_name]
            cut = sum(1 for t in times.values if suggestion is not None and t > suggestion)
            out[type_name] = {
                "suggested_start_to_close": suggestion,
                "attempts": times.seen,
                # counted in the sample, scaled to every attempt when the sample is partial
                "would_cut": None
                if suggestion is None
                else round(cut * times.seen / max(1, len(times.values))),
            }
        return out

    def _fidelity(self) -> dict[str, Any]:
        """How closely the simulated first starts follow the recorded ones."""
        starts = self.starts.values
        if len(starts) < 2:
            return {"tasks": self.starts.seen}
        recorded_rank = _ranks([s[0] for s in starts])
        simulated_rank = _ranks([s[1] for s in starts])
        n = len(starts)
        d2 = sum((a - b) ** 2 for a, b in zip(recorded_rank, simulated_rank, strict=True))
        spearman = 1 - 6 * d2 / (n * (n * n - 1))
        errors = sorted(abs(s[3] - s[2]) for s in starts)
        return {
            "tasks": self.starts.seen,
            "start_order_spearman": round(spearman, 4),
            "wait_error_mean_ms": _ms(sum(errors) / n),
            "wait_error_p95_ms": _ms(percentile(errors, 95)),
        }


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    ranks = [0.0] * len(values)
    for rank, index in enumerate(order):
        ranks[index] = float(rank)
    return ranks


def _downsample(values: Sequence[float], width: int) -> list[float]:
    """At most ``width`` values: the largest of each stretch."""
    if len(values) <= width:
        return list(values)
    step = len(values) / width
    return [
        max(values[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)])
        for i in range(width)
    ]


def sparkline(values: Sequence[float]) -> str:
    top = max(values, default=0)
    if top == 0:
        return BARS[0] * len(values)
    return "".join(BARS[min(len(BARS) - 1, math.ceil(v / top * (len(BARS) - 1)))] for v in values)


@dataclass(frozen=True)
class Report:
    data: dict[str, Any]

    def as_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces; the same inputs give the same bytes."""
        return json.dumps(self.data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @property
    def digest(self) -> str:
        """SHA-256 of ``as_json``: what a registry change records as its evidence."""
        return hashlib.sha256(self.as_json().encode()).hexdigest()

    def text(self) -> str:
        """The report for a terminal."""
        d = self.data
        out = [f"tasks: {d['tasks']}   report sha256: {self.digest[:16]}"]
        o = d["outcomes"]
        out.append(f"outcomes   simulated {_counts(o['simulated'])}")
        out.append(f"           recorded  {_counts(o['recorded'])}")
        out.append(
            f"retries    simulated {o['retries']['simulated']}  recorded "
            f"{o['retries']['recorded']};  rate-limited tasks {o['rate_limited']['tasks']} "
            f"({o['rate_limited']['seconds']} s in all)"
        )
        for why, count in o["why"].items():
            out.append(f"  {count:>7}  {why}")
        for title, key in (("queue", "waits_by_queue"), ("type", "waits_by_type")):
            out.append(f"waits by {title} (ms)          simulated p50 / p95 / p99   recorded")
            for name, both in d[key].items():
                out.append(f"  {name:<26} {_p(both['simulated'])}   {_p(both['recorded'])}")
        if d["worst"]:
            out.append("longest simulated waits")
            for w in d["worst"]:
                out.append(f"  {w['wait_ms']:>12} ms  {w['task_id']}  {w['type']} ({w['queue']})")
        depth, ended = d["queue_depth"], d["tasks_ended"]
        out.append(
            f"queue depth   {sparkline(_downsample(depth['values'], CHART_WIDTH))}  max "
            f"{max(depth['values'], default=0):g} (buckets of {depth['bucket_seconds']:g} s)"
        )
        out.append(
            f"tasks ended   {sparkline(_downsample(ended['values'], CHART_WIDTH))}  max "
            f"{max(ended['values'], default=0):g} per {ended['bucket_seconds']:g} s"
        )
        for lane in d["busiest_lanes"]:
            out.append(
                f"  lane {lane['lane']}: {lane['tasks']} tasks, {lane['total_wait_ms']} ms waited"
            )
        for type_name, learned in d["learned_timeouts"].items():
            suggested = learned["suggested_start_to_close"]
            if suggested is not None:
                out.append(
                    f"  {type_name}: suggested start_to_close {suggested:g}s "
                    f"would cut {learned['would_cut']} of {learned['attempts']} attempts"
                )
        f = d["fidelity"]
        if "start_order_spearman" in f:
            out.append(
                f"fidelity: start order spearman {f['start_order_spearman']}, wait error "
                f"mean {f['wait_error_mean_ms']} ms, p95 {f['wait_error_p95_ms']} ms "
                f"({f['tasks']} tasks)"
            )
        return "\n".join(out)


def _counts(counts: Mapping[str, int]) -> str:
    return "  ".join(f"{k} {v}" for k, v in counts.items()) or "-"


def _p(spread: Mapping[str, Any]) -> str:
    values = [spread[k] for k in ("p50_ms", "p95_ms", "p99_ms")]
    return " / ".join("-" if v is None else f"{v:g}" for v in values).ljust(26)
