"""The what-if simulation's rules on synthetic workloads (pure, no database): slots, queue
and lane limits, priorities, rate limits, timeouts, retries, dependencies, refusals, and
byte-identical reports for the same inputs."""

from __future__ import annotations

import tomllib
from typing import Any
from uuid import UUID, uuid4

from execution_ledger.domain.registry import Registry, build_registry
from execution_ledger.domain.simulation.engine import SimSettings, Simulation, TaskOutcome
from execution_ledger.domain.simulation.report import ReportBuilder
from execution_ledger.domain.simulation.workload import RecordedAttempt, Submission

T0 = 1_800_000_000.0


def registry(text: str = "") -> Registry:
    base = """
[task_types.work]
adapter = "python"
[task_types.other]
adapter = "python"
queue = "slow"
[queues.default]
concurrency = 10
[queues.slow]
concurrency = 10
"""
    return build_registry(tomllib.loads(base + text))


def sub(
    n: int,
    run: float = 1.0,
    at: float = 0.0,
    type_name: str = "work",
    outcome: str = "succeeded",
    **fields: Any,
) -> Submission:
    attempt = RecordedAttempt(T0 + at, T0 + at + run, outcome)
    data: dict[str, Any] = {
        "task_id": UUID(int=n),
        "position": n,
        "type_name": type_name,
        "queue": "slow" if type_name == "other" else "default",
        "priority": 0,
        "lane": None,
        "args": {},
        "enqueued": T0 + at,
        "run_at": None,
        "depends_on": (),
        "max_attempts": 3,
        "attempts": [attempt],
        "final": "succeeded" if outcome == "succeeded" else "failed",
        "final_at": T0 + at + run,
    }
    data.update(fields)
    return Submission(**data)


def simulate(
    subs: list[Submission], reg: Registry | None = None, **settings: Any
) -> dict[UUID, TaskOutcome]:
    sim = Simulation(reg or registry(), SimSettings(**settings))
    return {o.submission.task_id: o for o in sim.run(subs)}


def starts(outcomes: dict[UUID, TaskOutcome]) -> list[float | None]:
    return [
        None if o.first_start is None else round(o.first_start - T0, 6)
        for _, o in sorted(outcomes.items())
    ]


def test_one_slot_runs_the_tasks_one_after_another() -> None:
    out = simulate([sub(1, run=2.0), sub(2, run=1.0), sub(3)], workers=1, concurrency=1)
    assert starts(out) == [0.0, 2.0, 3.0]
    assert all(o.final == "succeeded" for o in out.values())


def test_more_slots_start_them_at_once() -> None:
    out = simulate([sub(1, run=2.0), sub(2), sub(3)], workers=3, concurrency=1)
    assert starts(out) == [0.0, 0.0, 0.0]


def test_a_queues_concurrency_holds_its_tasks_back() -> None:
    reg = registry("[queues.narrow]\nconcurrency = 1\n")
    subs = [sub(n, run=1.0, queue="narrow") for n in (1, 2, 3)]
    assert starts(simulate(subs, reg, concurrency=10)) == [0.0, 1.0, 2.0]


def test_a_lane_runs_one_at_a_time_by_default_and_its_limit_when_configured() -> None:
    subs = [sub(n, run=1.0, lane="agent:7") for n in (1, 2, 3)]
    assert starts(simulate(subs, concurrency=10)) == [0.0, 1.0, 2.0]
    wide = registry('[lanes."agent:*"]\nlimit = 2\n')
    assert starts(simulate(subs, wide, concurrency=10)) == [0.0, 0.0, 1.0]


def test_higher_priority_starts_first_when_tasks_wait_together() -> None:
    subs = [sub(1, run=5.0), sub(2, at=1.0), sub(3, at=2.0, priority=10)]
    out = simulate(subs, concurrency=1)
    assert starts(out) == [0.0, 6.0, 5.0]


def test_a_rate_limit_spaces_the_starts_of_its_bucket() -> None:
    reg = registry(
        '[rate_limits.api]\nlimit = 2\nperiod = "10s"\ntask_type = "work"\nkey = "tenant:{t}"\n'
    )
    subs = [sub(n, run=0.1, args={"t": "a"}) for n in (1, 2, 3)] + [
        sub(4, run=0.1, args={"t": "b"})
    ]
    out = simulate(subs, reg, concurrency=10)
    assert starts(out) == [0.0, 0.0, 10.0, 0.0]
    assert out[UUID(int=3)].rate_limited == 10.0


def test_a_shorter_start_to_close_cuts_attempts_and_the_retry_policy_decides() -> None:
    reg = registry(
        '[task_types.slowpoke]\nadapter = "python"\ntimeouts = { start_to_close = "1s" }\n'
        "retry = { max_attempts = 2, backoff_initial = 1.0, jitter = 0.0 }\n"
    )
    long = sub(1, run=5.0, type_name="slowpoke")
    out = simulate([long], reg)[UUID(int=1)]
    assert (out.final, out.attempts, out.retries) == ("timed_out", 2, 1)
    assert out.reason is not None and "start_to_close 1s" in out.reason


def test_a_failed_dependency_skips_its_dependents_and_a_success_frees_them() -> None:
    reg = registry('[task_types.flaky]\nadapter = "python"\nretry = { max_attempts = 1 }\n')
    first = sub(1, run=1.0, type_name="flaky", outcome="failed")
    second = sub(2, run=1.0, depends_on=(UUID(int=1),))
    out = simulate([first, second], reg)
    assert (out[UUID(int=1)].final, out[UUID(int=2)].final) == ("failed", "skipped")
    ok = simulate([sub(1, run=1.5), sub(2, run=1.0, depends_on=(UUID(int=1),))])
    assert starts(ok) == [0.0, 1.5]


def test_a_type_the_new_registry_lacks_is_refused() -> None:
    out = simulate([sub(1, type_name="gone")])[UUID(int=1)]
    assert (out.final, out.reason) == ("refused", "task type not in the registry")


def test_a_schedule_to_start_timeout_ends_a_task_that_waited_too_long() -> None:
    reg = registry(
        '[task_types.eager]\nadapter = "python"\ntimeouts = { schedule_to_start = "2s" }\n'
    )
    subs = [sub(1, run=5.0), sub(2, run=1.0, type_name="eager")]
    out = simulate(subs, reg, concurrency=1)
    assert out[UUID(int=2)].final == "timed_out"
    assert out[UUID(int=2)].reason == "schedule_to_start 2s passed before it started"


def test_a_recorded_cancel_happens_at_its_time() -> None:
    waiting = sub(2, run=1.0, final="cancelled", final_at=T0 + 0.5, attempts=[])
    out = simulate([sub(1, run=5.0), waiting], concurrency=1)
    assert out[UUID(int=2)].final == "cancelled" and out[UUID(int=2)].first_start is None


def test_the_same_inputs_give_byte_identical_reports_and_the_seed_matters() -> None:
    reg = registry(
        '[task_types.jittery]\nadapter = "python"\n'
        "retry = { max_attempts = 5, backoff_initial = 1.0, jitter = 0.5 }\n"
    )
    subs = [sub(n, run=0.5, type_name="jittery", outcome="failed") for n in range(1, 6)]

    def report(seed: int) -> str:
        builder = ReportBuilder()
        sim = Simulation(reg, SimSettings(concurrency=2, seed=seed))
        for outcome in sim.run([_copy(s) for s in subs]):
            builder.add(outcome)
        return builder.build(sim.depth, {"seed": seed}).as_json()

    assert report(1) == report(1)
    assert report(1) != report(2)


def _copy(s: Submission) -> Submission:
    return Submission(**{**{f: getattr(s, f) for f in s.__slots__}, "task_id": s.task_id})


def test_the_report_compares_with_what_happened() -> None:
    subs = [sub(n, run=1.0, at=0.0) for n in range(1, 5)]
    for n, s in enumerate(subs):  # as recorded: one slot
        s.attempts = [RecordedAttempt(T0 + n, T0 + n + 1, "succeeded")]
    builder = ReportBuilder()
    sim = Simulation(registry(), SimSettings(concurrency=1))
    for outcome in sim.run(subs):
        builder.add(outcome)
    data = builder.build(sim.depth, {}).data
    waits = data["waits_by_queue"]["default"]
    assert waits["simulated"] == waits["recorded"]
    assert data["fidelity"]["start_order_spearman"] == 1.0
    assert data["fidelity"]["wait_error_mean_ms"] == 0.0
    assert data["outcomes"]["simulated"] == {"succeeded": 4}


def test_unknown_ids_in_depends_on_count_as_done_before_the_window() -> None:
    out = simulate([sub(1, depends_on=(uuid4(),))])
    assert starts(out) == [0.0]
