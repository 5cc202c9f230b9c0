"""Limits at dispatch with several worker nodes, on a real PostgreSQL: a lane limit above 1,
lanes across queues and nodes, queue limits of two queues across two nodes, and each
node's ``--concurrency``. What ran at once is read from the log: each attempt spans from
its ``TaskStarted`` to the event that ended it (both stamped by the worker's clock, the end
before any start of the same round), so overlaps are counted, never timed."""

from __future__ import annotations

import textwrap
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from uuid import UUID

import pytest

from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from tests.processors.worker_harness import (
    run_built_nodes_until,
    run_nodes_until,
    runtime_with_config,
)

CONFIG = textwrap.dedent(
    """
    [defaults.timeouts]
    start_to_close = "20s"
    heartbeat = "5s"

    [queues.alpha]
    concurrency = 2

    [queues.beta]
    concurrency = 3

    [queues.wide_a]
    concurrency = 20

    [queues.wide_b]
    concurrency = 20

    [lanes."bulk:*"]
    limit = 3

    [task_types.nap_alpha]
    adapter = "python"
    queue = "alpha"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:sleep" }

    [task_types.nap_beta]
    adapter = "python"
    queue = "beta"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:sleep" }

    [task_types.nap_wide]
    adapter = "python"
    queue = "wide_a"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:sleep" }

    [task_types.bulk_a]
    adapter = "python"
    queue = "wide_a"
    lane = "bulk:{batch}"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:sleep" }

    [task_types.bulk_b]
    adapter = "python"
    queue = "wide_b"
    lane = "bulk:{batch}"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:sleep" }
    """
)
NAP = 0.4


@pytest.fixture
def rt(ledger_env: None, tmp_path: Path) -> Iterator[Runtime]:
    runtime = runtime_with_config(tmp_path, CONFIG)
    yield runtime
    runtime.close()


class Span:
    def __init__(self, rt: Runtime, task_id: UUID) -> None:
        history = [e.event for e in rt.store.history(task_id)]
        started = next(e for e in history if type(e).__name__ == "TaskStarted")
        self.start: datetime = started.timestamp
        self.end: datetime = history[-1].timestamp
        self.worker: str = started.worker  # type: ignore[attr-defined]


def spans(rt: Runtime, ids: list[UUID]) -> list[Span]:
    return [Span(rt, task_id) for task_id in ids]


def most_at_once(of: list[Span]) -> int:
    """The most attempts running at one moment (an end before a start at the same instant)."""
    points = sorted([(s.start, 1) for s in of] + [(s.end, -1) for s in of])
    running = peak = 0
    for _, step in points:
        running += step
        peak = max(peak, running)
    return peak


def succeeded(rt: Runtime, ids: list[UUID]) -> bool:
    return all(rt.store.load(task_id).state is TaskState.SUCCEEDED for task_id in ids)


def enqueue(rt: Runtime, type_name: str, count: int, **args: object) -> list[UUID]:
    return [
        rt.ledger.enqueue(TaskRequest(type_name, {"seconds": NAP, **args})).id for _ in range(count)
    ]


def test_a_lane_limit_of_three_holds_with_two_nodes_and_is_reached(rt: Runtime) -> None:
    lane = enqueue(rt, "bulk_a", 12, batch=1)
    other = enqueue(rt, "bulk_a", 2, batch=2)
    run_nodes_until(rt, lambda: succeeded(rt, [*lane, *other]), timeout=30, nodes=2)
    assert most_at_once(spans(rt, lane)) == 3
    assert most_at_once(spans(rt, [*lane, *other])) > 3  # another lane is not held back
    starts = [s.start for s in spans(rt, lane)]
    assert starts == sorted(starts)  # a lane starts its tasks in enqueue order


def test_a_lane_limit_holds_across_two_queues_each_served_by_its_own_node(rt: Runtime) -> None:
    lane = [
        task_id
        for _ in range(6)
        for task_id in [*enqueue(rt, "bulk_a", 1, batch=1), *enqueue(rt, "bulk_b", 1, batch=1)]
    ]

    def one_node_per_queue() -> list[WorkerNode]:
        return [WorkerNode(rt, queues=["wide_a"]), WorkerNode(rt, queues=["wide_b"])]

    run_built_nodes_until(one_node_per_queue, lambda: succeeded(rt, lane), timeout=30)
    ran = spans(rt, lane)
    assert most_at_once(ran) == 3
    assert len({s.worker for s in ran}) == 2


def test_queue_limits_of_two_queues_hold_across_two_nodes(rt: Runtime) -> None:
    alpha = enqueue(rt, "nap_alpha", 8)
    beta = enqueue(rt, "nap_beta", 8)
    # A node's round takes the slots its own attempts free, so one node with room for
    # both queues' five would run everything; three each make both take part.
    run_nodes_until(
        rt, lambda: succeeded(rt, [*alpha, *beta]), timeout=30, nodes=2, concurrency=3
    )
    assert most_at_once(spans(rt, alpha)) == 2
    assert most_at_once(spans(rt, beta)) == 3
    assert len({s.worker for s in spans(rt, [*alpha, *beta])}) == 2


def test_each_nodes_concurrency_is_never_exceeded(rt: Runtime) -> None:
    ids = enqueue(rt, "nap_wide", 18)
    run_nodes_until(rt, lambda: succeeded(rt, ids), timeout=30, nodes=2, concurrency=3)
    by_worker: dict[str, list[Span]] = defaultdict(list)
    for span in spans(rt, ids):
        by_worker[span.worker].append(span)
    assert len(by_worker) == 2
    assert [most_at_once(of) for of in by_worker.values()] == [3, 3]
    assert most_at_once(spans(rt, ids)) <= 6
