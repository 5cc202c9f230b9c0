"""The what-if simulation (issue 17): how much faster than real time, how flat its memory,
and how faithful to what happened.

    LEDGER_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python -m tests.bench.bench_simulation \
        [--rate 10] [--hours 24] [--tasks 400]

- *speed*: a synthetic day of history (``--rate`` tasks/s for ``--hours``: three types with
  log-normal run times, 5 % failures with retries, 20 agent lanes, a narrow queue) run
  through the engine and the report; simulated hours per wall-clock second, as "x real
  time" (target >= 100x). The log is read beside it in the second part.
- *memory*: the peak traced memory of runs over ``--memory-hours`` and a quarter of it
  (flat once a measure holds more values than its sample, 50,000: the whole window's peak
  is not four times the quarter's).
- *the log*: a real log made by a worker node on this database (``--tasks`` tasks with
  contention, a lane and failures), then ``ledger simulate``'s path (decode the window's
  task events, simulate, report) against a raw psycopg scan of the same rows: events/s and
  the ratio; and the *fidelity*: the replay through the registry it ran under, against what
  happened (start order Spearman, wait error mean and p95).
"""

from __future__ import annotations

import argparse
import math
import random
import time
import tracemalloc
from collections.abc import Iterator
from uuid import UUID

from execution_ledger.adapters.config_file import parse_config
from execution_ledger.adapters.simulation import (
    SimulationRequest,
    check_settings,
    simulate,
    text_sha256,
)
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.simulation.engine import SimSettings, Simulation
from execution_ledger.domain.simulation.report import ReportBuilder
from execution_ledger.domain.simulation.workload import RecordedAttempt, Submission
from execution_ledger.domain.submission import TaskRequest
from tests.bench.common import fresh_runtime

DAY_REGISTRY = """
[queues.default]
concurrency = 50
[queues.narrow]
concurrency = 4

[lanes."agent:*"]
limit = 1

[task_types.quick]
adapter = "python"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
[task_types.report]
adapter = "python"
queue = "narrow"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
[task_types.agent]
adapter = "python"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
retry = { max_attempts = 3, backoff_initial = 1.0 }
"""
LOG_REGISTRY = """
[queues.narrow]
concurrency = 3

[task_types.nap]
adapter = "python"
queue = "narrow"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:sleep" }

[task_types.laned]
adapter = "python"
lane = "agent:1"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:sleep" }

[task_types.quick]
adapter = "python"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }

[task_types.fail]
adapter = "python"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:fail" }
retry = { max_attempts = 2, backoff_initial = "50ms", jitter = 0.0 }
"""
T0 = 1_800_000_000.0


def synthetic_day(rate: float, hours: float, seed: int = 7) -> Iterator[Submission]:
    """Submissions at ``rate``/s for ``hours``, with their recorded attempts."""
    rng = random.Random(seed)
    count = int(rate * hours * 3600)
    at = T0
    for n in range(count):
        at += rng.expovariate(rate)
        kind = rng.random()
        if kind < 0.7:
            type_name, queue, lane, mu = "quick", "default", None, math.log(0.05)
        elif kind < 0.8:
            type_name, queue, lane, mu = "report", "narrow", None, math.log(2.0)
        else:
            type_name, queue, lane = "agent", "default", f"agent:{rng.randrange(20)}"
            mu = math.log(0.5)
        attempts = []
        start = at + 0.005
        for _ in range(3):
            run = rng.lognormvariate(mu, 0.6)
            failed = rng.random() < 0.05
            attempts.append(
                RecordedAttempt(start, start + run, "failed" if failed else "succeeded", "Boom")
            )
            if not failed:
                break
            start += run + 1.0
        yield Submission(
            task_id=UUID(int=n + 1),
            position=n + 1,
            type_name=type_name,
            queue=queue,
            priority=0,
            lane=lane,
            args={},
            enqueued=at,
            run_at=None,
            depends_on=(),
            max_attempts=3,
            attempts=attempts,
            final="succeeded" if attempts[-1].outcome == "succeeded" else "failed",
            final_at=attempts[-1].ended,
        )


def run_engine(registry: Registry, rate: float, hours: float) -> tuple[float, int]:
    """Seconds the engine and report take on the synthetic window; tasks simulated."""
    simulation = Simulation(registry, SimSettings(workers=2, concurrency=50))
    report = ReportBuilder()
    started = time.perf_counter()
    for outcome in simulation.run(synthetic_day(rate, hours)):
        report.add(outcome)
    report.build(simulation.depth, {})
    return time.perf_counter() - started, sum(report.finals.values())


def peak_memory(registry: Registry, rate: float, hours: float) -> float:
    """Peak traced memory (MB) of a run over the synthetic window."""
    tracemalloc.start()
    try:
        run_engine(registry, rate, hours)
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def log_part(tasks: int) -> None:
    """A real log, read and simulated, beside a raw scan; and the fidelity of the replay."""
    from psycopg import sql

    from tests.processors.worker_harness import run_workload

    with fresh_runtime(LOG_REGISTRY) as runtime:
        rng = random.Random(3)
        requests = []
        for n in range(tasks):
            pick = rng.random()
            if pick < 0.3:
                requests.append(TaskRequest("nap", {"seconds": rng.choice((0.05, 0.1, 0.2))}))
            elif pick < 0.45:
                requests.append(TaskRequest("laned", {"seconds": 0.05}))
            elif pick < 0.5:
                requests.append(TaskRequest("fail", {}))
            else:
                requests.append(TaskRequest("quick", {"n": n}))
        run_workload(runtime, requests, timeout=600)
        head = runtime.store.head_position()
        started = time.perf_counter()
        with runtime.store.transaction() as cursor:
            cursor.execute(
                sql.SQL(
                    "SELECT notification_id, topic, state FROM {} ORDER BY notification_id"
                ).format(runtime.store.table)
            )
            rows = len(cursor.fetchall())
        raw = rows / (time.perf_counter() - started)
        request = SimulationRequest(
            registry=parse_config(LOG_REGISTRY, "bench").registry,
            registry_text_sha256=text_sha256(LOG_REGISTRY),
            registry_source="bench",
            settings=check_settings(1, 10, 0),
        )
        started = time.perf_counter()
        report = simulate(runtime.store, request, baseline=runtime.settings.config.registry)
        elapsed = time.perf_counter() - started
        fidelity = report.data["fidelity"]
        inputs = report.data["inputs"]
        print(
            f"log: {head} events of {tasks} tasks simulated in {elapsed:.2f} s "
            f"({head / elapsed:,.0f} events/s, two passes: calibration and the run) vs a raw "
            f"scan {raw:,.0f} rows/s: {head / elapsed / raw:.3f}x"
        )
        print(
            f"fidelity (replay through the registry it ran under): start order Spearman "
            f"{fidelity['start_order_spearman']}, wait error mean {fidelity['wait_error_mean_ms']}"
            f" ms, p95 {fidelity['wait_error_p95_ms']} ms over {fidelity['tasks']} tasks; "
            f"calibrated start latency {inputs['start_latency_ms']} ms, hop "
            f"{inputs['hop_latency_ms']} ms"
        )
        recorded = report.data["waits_by_queue"]
        for queue, both in recorded.items():
            print(f"  {queue}: simulated {both['simulated']}  recorded {both['recorded']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=10.0, help="synthetic tasks per second")
    parser.add_argument("--hours", type=float, default=24.0, help="synthetic window, hours")
    parser.add_argument("--tasks", type=int, default=400, help="tasks of the real log")
    parser.add_argument(
        "--memory-hours", type=float, default=8.0, help="synthetic window of the memory part"
    )
    parser.add_argument("--skip-log", action="store_true", help="only the synthetic part")
    options = parser.parse_args()
    registry = parse_config(DAY_REGISTRY, "bench").registry
    seconds, simulated = run_engine(registry, options.rate, options.hours)
    window = options.hours * 3600
    print(
        f"speed: {simulated:,} tasks over {options.hours:g} h simulated in {seconds:.1f} s: "
        f"{window / seconds:,.0f}x real time ({simulated / seconds:,.0f} tasks/s; target >= 100x)"
    )
    quarter = peak_memory(registry, options.rate, options.memory_hours / 4)
    whole = peak_memory(registry, options.rate, options.memory_hours)
    print(
        f"memory: peak {quarter:.1f} MB for {options.memory_hours / 4:g} h, {whole:.1f} MB for "
        f"{options.memory_hours:g} h ({whole / quarter:.2f}x for 4x the tasks)"
    )
    if not options.skip_log:
        log_part(options.tasks)


if __name__ == "__main__":
    main()
