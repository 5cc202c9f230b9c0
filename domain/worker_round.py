"""What a worker round decides, given what it read: pure rules, no I/O.

A round (``adapters/postgres/dispatch.py``) records the outcomes of the attempts that ended
since the last one, starts due tasks and unblocks the dependents its successes free
(``domain/dependencies.py``), in one transaction. The adapter takes the locks, reads and
saves; these functions decide:

- ``still_runs``: whether an attempt is still its task's running one (the outcome or
  progress of an attempt that ended elsewhere, cancelled or timed out, is dropped);
- ``record_outcomes``: each outcome's events (success, failure or timeout, children
  spawned, a retry when the policy allows) on its loaded task;
- ``record_progress``: a progress note's ``TaskHeartbeat``;
- ``start_due`` / ``start_attempt``: a due task's ``TaskStarted`` and lease, and ``claimed`` /
  ``with_inputs``: the attempt as its worker gets it;
- ``direct_starts``: which dependents just unblocked the round may start without reading
  their queue again, and ``reads_again``: whether it reads the queues once more for them.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final, NamedTuple
from uuid import UUID, uuid4

from execution_ledger.domain.children import spawned_children
from execution_ledger.domain.execution import AttemptOutcome, ClaimedAttempt
from execution_ledger.domain.inputs import resolve_inputs
from execution_ledger.domain.outcomes import record_result, record_timeout
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.task import Task, TaskState
from execution_ledger.domain.timeouts import TimeoutKind, Timeouts

DEFAULT_HEARTBEAT_SECONDS: Final = 30.0  # when neither the task nor the registry sets one


class Start(NamedTuple):
    """A task started by a round (its ``TaskStarted`` pending), with what the start resolved."""

    task: Task
    attempt: int
    timeouts: Timeouts
    heartbeat: float


def still_runs(task: Task, attempt: int) -> bool:
    """Whether ``attempt`` is still ``task``'s running attempt (not ended elsewhere)."""
    return task.state is TaskState.RUNNING and task.attempts == attempt


def record_outcomes(
    outcomes: Sequence[AttemptOutcome],
    tasks: Mapping[UUID, Task],
    registry: Registry,
    now: datetime,
    jitter: Callable[[], float],
    new_id: Callable[[], UUID] = uuid4,
) -> tuple[list[Task], list[AttemptOutcome]]:
    """The tasks given the events of ``outcomes`` (pending; a parent followed by the
    children it spawned), and the outcomes dropped because their attempt already ended.
    ``tasks`` holds each outcome's task as loaded; ``jitter`` draws a retry's back-off."""
    changed: list[Task] = []
    dropped: list[AttemptOutcome] = []
    for outcome in outcomes:
        task = tasks[outcome.task_id]
        if not still_runs(task, outcome.attempt):
            dropped.append(outcome)
            continue
        changed.append(task)
        if outcome.timed_out:
            record_timeout(task, TimeoutKind.START_TO_CLOSE, now, jitter())
            continue
        assert outcome.result is not None
        children = spawned_children(registry, task, outcome.attempt, outcome.result, now, new_id)
        if children is None:
            record_result(task, outcome.attempt, outcome.result, now, jitter())
        else:  # the parent's TaskChildrenSpawned first, then its children
            changed.extend(children)
    return changed, dropped


def record_progress(
    task: Task,
    attempt: int,
    lease_expires_at: datetime,
    progress: float | None,
    message: str | None,
) -> bool:
    """Give ``task`` a ``TaskHeartbeat`` with the progress its attempt reported and the
    lease just renewed; False (no event) when that attempt no longer runs."""
    if not still_runs(task, attempt):
        return False
    task.heartbeat(attempt, lease_expires_at, progress, message)
    return True


def start_attempt(task: Task, worker: str, now: datetime, registry: Registry) -> Start:
    """Start ``task``'s next attempt for ``worker``: its lease lasts its heartbeat timeout
    (the task's, else the registry's default, else ``DEFAULT_HEARTBEAT_SECONDS``)."""
    timeouts = Timeouts.from_dict(task.timeouts)
    heartbeat = (
        timeouts.heartbeat or registry.default_timeouts.heartbeat or DEFAULT_HEARTBEAT_SECONDS
    )
    attempt = task.start(worker, now + timedelta(seconds=heartbeat), now, registry.version)
    return Start(task, attempt, timeouts, heartbeat)


def start_due(tasks: Iterable[Task], worker: str, now: datetime, registry: Registry) -> list[Start]:
    """Start each of ``tasks`` that is due now; one whose ``run_at`` is a moment ahead of
    this clock is left for the next claim."""
    return [start_attempt(task, worker, now, registry) for task in tasks if task.is_due(now)]


def direct_starts(
    unblocked: Iterable[Task],
    started: Sequence[Start],
    limit: int,
    exhausted: Container[str],
    budgets: Mapping[str, int],
    rate_limited: Callable[[str], bool],
    now: datetime,
) -> list[Task]:
    """Of the dependents just unblocked, those the round may start without reading the
    queues again, where that passes no other task: their queue's due tasks were all read
    by this round (``exhausted``: taken, or held back by their limits), it has budget left
    after ``started``, they have no lane (a lane's order and limit need its rows) and no
    rate limit covers their queue (its buckets need counting: the next read starts them).
    At most ``limit`` starts in all."""
    used = Counter(start.task.queue for start in started)
    room = limit - len(started)
    direct: list[Task] = []
    for task in unblocked:
        if len(direct) >= room:
            break
        queue = task.queue
        if queue not in exhausted or task.lane is not None or not task.is_due(now):
            continue
        if rate_limited(queue) or budgets.get(queue, 0) - used[queue] <= 0:
            continue
        direct.append(task)
        used[queue] += 1
    return direct


def reads_again(unblocked: Iterable[Task], started: int, limit: int) -> bool:
    """Whether the round reads the queues once more, in its transaction (it sees its own
    writes): a dependent it unblocked is still waiting (not started directly) and the
    round may start more. A chain hop then costs one round."""
    return limit > started and any(task.state is not TaskState.RUNNING for task in unblocked)


def claimed(start: Start) -> ClaimedAttempt:
    """The attempt as its worker runs it."""
    task = start.task
    return ClaimedAttempt(
        task_id=task.id,
        attempt=start.attempt,
        type_name=task.type_name,
        adapter=task.adapter,
        args=task.args,
        adhoc_settings=task.adapter_settings,
        timeouts=start.timeouts,
        queue=task.queue,
        lane=task.lane,
        trace=task.trace,  # the context it was enqueued in: its run span continues it
    )


def inputs_wanted(started: Iterable[Start]) -> set[UUID]:
    """The dependencies whose results the started attempts take as inputs."""
    return {dep for s in started if s.task.inputs for dep in s.task.inputs.values()}


def with_inputs(
    attempts: Sequence[ClaimedAttempt],
    started: Iterable[Start],
    dependencies: Mapping[UUID, Task],
    max_bytes: int,
) -> list[ClaimedAttempt]:
    """The attempts whose tasks take inputs, given them (or the failure that refuses the
    attempt: an input missing or too large); the others as they are."""
    resolved = {
        s.task.id: resolve_inputs(s.task.inputs, dependencies, max_bytes)
        for s in started
        if s.task.inputs
    }
    return [
        dataclasses.replace(a, inputs=resolved[a.task_id][0], refused=resolved[a.task_id][1])
        if a.task_id in resolved
        else a
        for a in attempts
    ]
