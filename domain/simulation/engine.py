"""The simulated dispatcher: recorded submissions run through a registry's dispatch rules on
a simulated clock.

The rules are the claim's (``adapters/postgres/candidates.py``), in continuous time: a task
is due once enqueued, past its not-before time and with every dependency succeeded; due
tasks start while worker slots (``workers`` x ``concurrency``), their queue's concurrency,
their lane's limit (a lane offers only its oldest due task) and every rate limit that covers
them allow, by priority (highest first), then enqueue order. An attempt runs for its
recorded run time (the same attempt number of the same task); an attempt that did not
happen runs for a time drawn from the recorded run times of its type (a seeded draw), with
the outcome its task's record suggests. The new registry's timeouts cut attempts and waits
short (``start_to_close``, ``schedule_to_start``, ``schedule_to_close``), its retry policies
decide retries (back-off with a seeded jitter), and a task whose type it does not declare is
refused at enqueue. Recorded cancellations happen at their recorded time.

Deterministic: the same workload, registry, settings and seed give the same outcomes (ties
broken by enqueue order, every draw from one seeded generator).
"""

from __future__ import annotations

import heapq
import random
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from uuid import UUID

from execution_ledger.domain.rate_limits import RateLimit
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.retry import RetryPolicy
from execution_ledger.domain.simulation.series import Series
from execution_ledger.domain.simulation.workload import Submission
from execution_ledger.domain.timeouts import Timeouts, resolve_timeouts

RESERVOIR = 1000  # recorded run times kept per type for draws


@dataclass(frozen=True)
class SimSettings:
    workers: int = 1  # worker nodes
    concurrency: int = 10  # attempts each node runs at once
    seed: int = 0
    # Seconds from a task becoming due with a slot free to its attempt running: the real
    # wake-up, claim round and hand-off to the executor (``calibration.py``).
    start_latency: float = 0.0
    # Seconds from an attempt's recorded end to the start of the task that takes its slot.
    hop_latency: float = 0.0

    @property
    def slots(self) -> int:
        return self.workers * self.concurrency


@dataclass(slots=True)
class TaskOutcome:
    """What the simulation did with one submission (handed to the report when it ends)."""

    submission: Submission
    queue: str
    lane: str | None
    final: str  # succeeded | failed | timed_out | cancelled | skipped | refused | open
    why: str | None = None  # a stable label of why it did not succeed (counted together)
    reason: str | None = None  # the same with its numbers, for this task
    due: float | None = None  # first due
    first_start: float | None = None
    ended: float | None = None
    attempts: int = 0
    retries: int = 0
    rate_limited: float = 0.0  # seconds it waited on rate limits
    # The recorded end of the attempt whose slot its first start took (None: it started
    # the moment it was due): how calibration pairs real hops.
    slot_from: float | None = None


@dataclass(slots=True)
class _Task:
    seq: int
    sub: Submission
    queue: str
    priority: int
    lane: str | None
    timeouts: Timeouts
    retry: RetryPolicy
    limits: tuple[tuple[RateLimit, str], ...]
    outcome: TaskOutcome
    deps_left: int = 0
    state: str = "pending"  # pending | blocked | due | running | ended
    due_since: float = 0.0
    attempt: int = 0
    attempt_token: int = 0  # invalidates the scheduled end of a cut attempt
    parked_at: float | None = None  # since when it waits on a rate limit
    dependents: list[_Task] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Ending:
    """How an attempt will end: its outcome, and for a failure why (label and detail)."""

    outcome: str  # succeeded | failed | timed_out
    error_class: str | None
    retryable: bool
    why: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.why is None and self.outcome != "succeeded":
            label = f"{self.outcome} ({self.error_class})" if self.error_class else self.outcome
            object.__setattr__(self, "why", label)
            object.__setattr__(self, "reason", label)


# Kinds of scheduled happenings, in the order they are taken at the same instant.
_END, _CANCEL, _SUBMIT, _DUE, _TIMEOUT, _WAKE = range(6)


class Simulation:
    """Runs submissions (in enqueue order) through ``registry``; ``run`` yields each task's
    ``TaskOutcome`` as it ends (and the rest, open, at the end).

    ``baseline`` is the registry the window actually ran under, when known: a task whose
    recorded queue or priority is its type's there (the type's default, not the
    submitter's choice) takes its type's queue or priority in ``registry``."""

    def __init__(
        self, registry: Registry, settings: SimSettings, baseline: Registry | None = None
    ) -> None:
        self.registry = registry
        self.baseline = baseline
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.now = 0.0
        self._events: list[tuple[float, int, int, Callable[[], None]]] = []
        self._order = 0
        self._seq = 0
        self._tasks: dict[UUID, _Task] = {}  # submitted and not ended
        self._failed: set[UUID] = set()  # ended without success (their dependents skip)
        self._free = settings.slots
        self._queue_running: dict[str, int] = defaultdict(int)
        self._offered: dict[str, list[tuple[int, int, _Task]]] = defaultdict(list)
        self._lane_due: dict[str, list[tuple[int, _Task]]] = defaultdict(list)
        self._lane_running: dict[str, int] = defaultdict(int)
        self._lane_offered: set[str] = set()
        self._starts: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._run_times: dict[str, list[float]] = defaultdict(list)
        self._run_times_seen: dict[str, int] = defaultdict(int)
        self._done: list[TaskOutcome] = []
        self.depth = Series(max, carry=True)  # tasks due and not started, over time
        self._due_count = 0
        self._freed_at: float | None = None  # recorded end of the attempt that just ended

    # -- driving ----------------------------------------------------------------------

    def run(self, submissions: Iterable[Submission]) -> Iterator[TaskOutcome]:
        """Feed the submissions in enqueue order; the outcomes of tasks as they end."""
        for submission in submissions:
            self._learn(submission)
            self._advance_to(submission.enqueued)
            self._at(submission.enqueued, _SUBMIT, partial(self._submit, submission))
            yield from self._drain_done()
        self._advance_to(float("inf"))
        yield from self._drain_done()
        for task in sorted(self._tasks.values(), key=lambda t: t.seq):  # never ended
            task.outcome.final = "open"
            yield task.outcome

    def _drain_done(self) -> Iterator[TaskOutcome]:
        done, self._done = self._done, []
        yield from done

    def _advance_to(self, until: float) -> None:
        while self._events and self._events[0][0] <= until:
            when, _, _, action = heapq.heappop(self._events)
            self.now = max(self.now, when)
            action()
            self.depth.add(self.now, self._due_count)

    def _at(self, when: float, kind: int, action: Callable[[], None]) -> None:
        self._order += 1
        heapq.heappush(self._events, (when, kind, self._order, action))

    # -- submissions --------------------------------------------------------------------

    def _learn(self, submission: Submission) -> None:
        """Keep (a reservoir of) the recorded run times of its type, for draws."""
        for attempt in submission.attempts:
            run_time = attempt.run_time
            if run_time is None:
                continue
            pool = self._run_times[submission.type_name]
            seen = self._run_times_seen[submission.type_name] = (
                self._run_times_seen[submission.type_name] + 1
            )
            if len(pool) < RESERVOIR:
                pool.append(run_time)
            else:
                slot = self.rng.randrange(seen)
                if slot < RESERVOIR:
                    pool[slot] = run_time

    def _submit(self, sub: Submission) -> None:
        task_type = self.registry.task_type(sub.type_name)
        if task_type is None:
            outcome = TaskOutcome(sub, sub.queue, sub.lane, final="refused")
            outcome.why = outcome.reason = "task type not in the registry"
            self._finish_outcome(sub.task_id, outcome, failed=True)
            return
        queue_name, priority = self._queue_and_priority(sub, task_type.queue, task_type.priority)
        outcome = TaskOutcome(sub, queue_name, sub.lane, final="open")
        queue = self.registry.queue(queue_name)
        self._seq += 1
        task = _Task(
            seq=self._seq,
            sub=sub,
            queue=queue_name,
            priority=priority,
            lane=sub.lane,
            timeouts=resolve_timeouts(
                task_type.timeouts, queue.timeouts, default=self.registry.default_timeouts
            ),
            retry=task_type.retry,
            limits=self._limits_of(sub, queue_name),
            outcome=outcome,
        )
        self._tasks[sub.task_id] = task
        if sub.final == "cancelled" and sub.final_at is not None:
            self._at(sub.final_at, _CANCEL, lambda: self._cancel(task))
        if task.timeouts.schedule_to_close is not None:
            limit = task.timeouts.schedule_to_close
            self._at(self.now + limit, _TIMEOUT, lambda: self._expire(task, "schedule_to_close"))
        for dep_id in sub.depends_on:
            if dep_id in self._failed:
                self._skip(task, dep_id)
                return
            dep = self._tasks.get(dep_id)
            if dep is not None:  # still to end here (one outside the window has ended)
                task.deps_left += 1
                dep.dependents.append(task)
        if task.deps_left:
            task.state = "blocked"
        else:
            self._schedule_due(task, max(self.now, sub.run_at or self.now))

    def _queue_and_priority(self, sub: Submission, queue: str, priority: int) -> tuple[str, int]:
        """The new type's queue and priority where the recorded ones were the old type's."""
        old = self.baseline.task_type(sub.type_name) if self.baseline is not None else None
        if old is None:
            return sub.queue, sub.priority
        return (
            queue if sub.queue == old.queue else sub.queue,
            priority if sub.priority == old.priority else sub.priority,
        )

    def _limits_of(self, sub: Submission, queue: str) -> tuple[tuple[RateLimit, str], ...]:
        limits = []
        for limit in sorted(self.registry.rate_limits.values(), key=lambda r: r.name):
            if limit.key is None and not (limit.task_type or limit.queue):
                continue
            if limit.covers(sub.type_name, queue):
                bucket = limit.bucket(sub.args)
                if bucket is not None:
                    limits.append((limit, bucket))
        return tuple(limits)

    # -- becoming due, and starting -----------------------------------------------------

    def _schedule_due(self, task: _Task, when: float) -> None:
        task.state = "pending"
        self._at(when, _DUE, lambda: self._due(task))

    def _due(self, task: _Task) -> None:
        if task.state == "ended":
            return
        task.state = "due"
        task.due_since = self.now
        self._due_count += 1
        if task.outcome.due is None:
            task.outcome.due = self.now
        start_limit = task.timeouts.schedule_to_start
        if start_limit is not None:
            attempt = task.attempt
            self._at(
                self.now + start_limit,
                _TIMEOUT,
                lambda: self._start_timeout(task, attempt),
            )
        if task.lane is None:
            self._offer(task)
        else:
            heapq.heappush(self._lane_due[task.lane], (task.seq, task))
            self._refresh_lane(task.lane)
        self._dispatch()

    def _offer(self, task: _Task) -> None:
        heapq.heappush(self._offered[task.queue], (-task.priority, task.seq, task))

    def _refresh_lane(self, lane: str) -> None:
        """Offer the lane's oldest due task while the lane has room and offers none."""
        if lane in self._lane_offered or self._lane_running[lane] >= self.registry.lane_limit(lane):
            return
        waiting = self._lane_due[lane]
        while waiting:
            _, task = heapq.heappop(waiting)
            if task.state == "due":
                self._lane_offered.add(lane)
                self._offer(task)
                return

    def _dispatch(self) -> None:
        while self._free > 0:
            task = self._next_candidate()
            if task is None:
                return
            wait_until = self._rate_slot(task)
            if wait_until is not None:
                if task.parked_at is None:
                    task.parked_at = self.now
                self._at(wait_until, _WAKE, partial(self._wake, task))
                continue
            self._start(task)

    def _next_candidate(self) -> _Task | None:
        """Pop the best offered task of a queue with room (priority, then enqueue order)."""
        best: tuple[int, int, _Task] | None = None
        best_queue = ""
        for queue, offered in self._offered.items():
            while offered and offered[0][2].state != "due":
                heapq.heappop(offered)
            if not offered:
                continue
            if self._queue_running[queue] >= self.registry.queue(queue).concurrency:
                continue
            if best is None or offered[0][:2] < best[:2]:
                best, best_queue = offered[0], queue
        if best is None:
            return None
        heapq.heappop(self._offered[best_queue])
        return best[2]

    def _rate_slot(self, task: _Task) -> float | None:
        """None if every rate limit covering the task has a slot now; else when one frees."""
        later: float | None = None
        for limit, bucket in task.limits:
            starts = self._starts[(limit.name, bucket)]
            while starts and starts[0] <= self.now - limit.period:
                starts.popleft()
            if len(starts) >= limit.limit:
                free_at = starts[0] + limit.period
                later = free_at if later is None else max(later, free_at)
        return later

    def _wake(self, task: _Task) -> None:
        if task.state == "due":
            if task.parked_at is not None:
                task.outcome.rate_limited += self.now - task.parked_at
                task.parked_at = None
            self._offer(task)
            self._dispatch()

    def _start(self, task: _Task) -> None:
        if task.parked_at is not None:
            task.outcome.rate_limited += self.now - task.parked_at
            task.parked_at = None
        for rate, bucket in task.limits:
            self._starts[(rate.name, bucket)].append(self.now)
        self._free -= 1
        self._due_count -= 1
        self._queue_running[task.queue] += 1
        if task.lane is not None:
            self._lane_running[task.lane] += 1
            self._lane_offered.discard(task.lane)
            self._refresh_lane(task.lane)
        task.state = "running"
        task.attempt += 1
        task.attempt_token += 1
        task.outcome.attempts = task.attempt
        # A task started the moment it became due was found by a wake-up and a claim round;
        # one that waited for a slot starts in the round that recorded the slot's last
        # attempt (its recorded run time already holds that round).
        woken = self.now - task.due_since <= 1e-9
        latency = self.settings.start_latency if woken else self.settings.hop_latency
        begin = self.now + latency
        if task.outcome.first_start is None:
            task.outcome.first_start = begin
            task.outcome.slot_from = None if woken else self._freed_at
        run_time, outcome, error_class, retryable = self._attempt_of(task)
        cutoff = task.timeouts.start_to_close
        token = task.attempt_token
        if run_time is None:  # still running when the window ended: never ends here
            return
        ending = _Ending(outcome, error_class, retryable)
        end = run_time
        if cutoff is not None and run_time > cutoff:
            end = cutoff
            ending = _Ending(
                "timed_out",
                None,
                True,
                "start_to_close cut an attempt short",
                f"start_to_close {cutoff:g}s cut an attempt of {run_time:.3f}s",
            )
        self._at(begin + end, _END, lambda: self._attempt_ended(task, token, ending))

    def _attempt_of(self, task: _Task) -> tuple[float | None, str, str | None, bool]:
        """The attempt's run time, outcome, error class and whether it may be retried."""
        recorded = task.sub.attempts
        if task.attempt <= len(recorded):
            attempt = recorded[task.attempt - 1]
            outcome = attempt.outcome or "succeeded"
            return attempt.run_time, outcome, attempt.error_class, attempt.retryable
        pool = self._run_times.get(task.sub.type_name) or [0.0]
        run_time = pool[self.rng.randrange(len(pool))]
        last = recorded[-1].outcome if recorded else None
        outcome = "succeeded" if task.sub.final == "succeeded" or last is None else last
        error_class = recorded[-1].error_class if recorded else None
        return run_time, outcome, error_class, True

    # -- ends -----------------------------------------------------------------------------

    def _release(self, task: _Task) -> None:
        self._free += 1
        self._queue_running[task.queue] -= 1
        if task.lane is not None:
            self._lane_running[task.lane] -= 1
            self._refresh_lane(task.lane)

    def _attempt_ended(self, task: _Task, token: int, ending: _Ending) -> None:
        if task.state != "running" or token != task.attempt_token:
            return
        self._release(task)
        recorded = task.sub.attempts
        ended = recorded[task.attempt - 1].ended if task.attempt <= len(recorded) else None
        if ending.outcome == "succeeded":
            self._end(task, "succeeded")
        elif task.retry.allows_retry(task.attempt, ending.error_class, ending.retryable):
            task.outcome.retries += 1
            delay = task.retry.backoff(task.attempt, self.rng.random())
            self._schedule_due(task, self.now + delay)
        else:
            task.outcome.why, task.outcome.reason = ending.why, ending.reason
            self._end(task, "timed_out" if ending.outcome == "timed_out" else "failed")
        self._freed_at = ended
        self._dispatch()
        self._freed_at = None

    def _start_timeout(self, task: _Task, attempt: int) -> None:
        if task.state == "due" and task.attempt == attempt:
            limit = task.timeouts.schedule_to_start
            self._due_count -= 1
            task.outcome.why = "schedule_to_start passed before it started"
            task.outcome.reason = f"schedule_to_start {limit:g}s passed before it started"
            self._end(task, "timed_out")

    def _expire(self, task: _Task, kind: str) -> None:
        if task.state == "ended":
            return
        if task.state == "running":
            self._release(task)
        elif task.state == "due":
            self._due_count -= 1
        limit = task.timeouts.schedule_to_close
        task.outcome.why = f"{kind} passed before it ended"
        task.outcome.reason = f"{kind} {limit:g}s passed before it ended"
        self._end(task, "timed_out")
        self._dispatch()

    def _cancel(self, task: _Task) -> None:
        if task.state == "ended":
            return
        if task.state == "running":
            self._release(task)
        elif task.state == "due":
            self._due_count -= 1
        task.outcome.why = task.outcome.reason = "cancelled (as recorded)"
        self._end(task, "cancelled")
        self._dispatch()

    def _skip(self, task: _Task, dependency: UUID) -> None:
        task.outcome.why = "a dependency did not succeed"
        task.outcome.reason = f"dependency {dependency} did not succeed"
        self._end(task, "skipped")

    def _end(self, task: _Task, final: str) -> None:
        task.state = "ended"
        task.attempt_token += 1
        self._finish_outcome(task.sub.task_id, task.outcome, failed=final != "succeeded")
        task.outcome.final = final
        task.outcome.ended = self.now
        self._tasks.pop(task.sub.task_id, None)
        for dependent in task.dependents:
            if dependent.state == "ended":
                continue
            if final != "succeeded":
                self._skip(dependent, task.sub.task_id)
            else:
                dependent.deps_left -= 1
                if dependent.deps_left == 0:
                    run_at = dependent.sub.run_at or self.now
                    self._schedule_due(dependent, max(self.now, run_at))
        task.dependents = []

    def _finish_outcome(self, task_id: UUID, outcome: TaskOutcome, failed: bool) -> None:
        if failed:
            self._failed.add(task_id)
        outcome.ended = self.now
        self._done.append(outcome)

    @property
    def due_now(self) -> int:
        """Tasks due and not started at the current simulated time."""
        return self._due_count
