"""The worker: claim due attempts, run them through their adapter under the one timeout
policy, record how each ended. One loop, top to bottom:

1. record the outcomes of the attempts that ended since the last round and claim as many
   attempts as there are free slots, all in one transaction;
2. run each claimed attempt in its own asyncio task, cancelled at its ``start_to_close``
   deadline — the adapter stops the real work (process group, Lua child, HTTP request) on
   cancellation; its outcome waits for the next round, which its ending wakes;
3. sleep until woken: new ready work (NOTIFY ``ledger_ready``), an attempt ending, a
   cancelled task, the next scheduled task coming due, or the short fallback poll.

Leases are renewed for all running attempts of this worker in one statement per interval;
an attempt whose lease is gone (cancelled, or timed out by the watchdog) is stopped here.
Progress that task code reports (``Execution.progress``) is coalesced per attempt: the
latest report goes with the next renewal as a ``TaskHeartbeat``, at most one per attempt
every ``progress_interval`` seconds.
On ``stop`` the loop claims no more; the attempts running get ``shutdown_grace`` to end,
the rest are cancelled (``WorkerShutdown``), and leases are renewed until all are recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol, TypeVar
from uuid import UUID

from execution_ledger.domain.execution import (
    AttemptOutcome,
    ClaimedAttempt,
    Execution,
    ExecutionResult,
    Failure,
)
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.storable import storable_text
from execution_ledger.domain.trace_context import attempt_fields
from execution_ledger.processors.attempt_tracing import AttemptTracing, RunSpan
from execution_ledger.processors.unstorable import database_away, unstorable_outcome

log = logging.getLogger(__name__)

_Result = TypeVar("_Result")


class Dispatch(Protocol):
    def claim(
        self,
        queues: Sequence[str],
        limit: int,
        worker: str,
        outcomes: Sequence[AttemptOutcome] = (),
    ) -> list[ClaimedAttempt]: ...

    def complete(self, outcomes: Sequence[AttemptOutcome]) -> None: ...

    def renew(
        self, worker: str, held: Sequence[UUID], progress: Sequence[ProgressNote] = ()
    ) -> set[UUID]: ...

    def next_due(self, queues: Sequence[str]) -> datetime | None: ...


class OffLoop(Protocol):
    """Runs a blocking store call off the event loop; awaiting it gives the call's result."""

    def __call__(self, function: Callable[..., _Result], /, *args: Any) -> Awaitable[_Result]: ...


class ProgressNote(NamedTuple):
    """The latest progress an attempt's code reported, to record as a heartbeat."""

    task_id: UUID
    attempt: int
    progress: float | None
    message: str | None


class Executor(Protocol):
    async def run(self, execution: Execution) -> ExecutionResult: ...


@dataclass(frozen=True)
class WorkerSettings:
    worker_id: str
    queues: tuple[str, ...]
    concurrency: int = 10
    poll_interval: float = 0.25
    renew_interval: float = 1.0
    shutdown_grace: float = 5.0
    claim_gather: float = 0.002  # seconds to let freed slots gather before a claim
    # After a ready notice, at most this long for an attempt ending meanwhile (``run``).
    notice_gather: float = 0.001
    progress_interval: float = 2.0  # at most one TaskHeartbeat per attempt this often


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        dispatch: Dispatch,
        executors: Mapping[str, Executor],
        registry: Registry,
        blocking: OffLoop,
        clock: Callable[[], datetime],
        tracing: AttemptTracing | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing  # None: telemetry off, no span is made
        self.dispatch = dispatch
        self.executors = executors
        self.registry = registry
        self.blocking = blocking
        self.clock = clock
        self.running: dict[UUID, asyncio.Task[None]] = {}
        self.outcomes: asyncio.Queue[AttemptOutcome] = asyncio.Queue()
        self.wake = asyncio.Event()
        self.noticed = False  # a ready notice came since the last round
        self.ended = asyncio.Event()  # an attempt's outcome was queued
        self.stopped: set[UUID] = set()  # attempts stopped because their task moved on
        self.reported: dict[UUID, ProgressNote] = {}  # latest progress, not yet recorded
        self.noted_at: dict[UUID, float] = {}  # when each attempt's last heartbeat went
        # Called before each round, on the loop (a registry swap: ``registry_follower.py``).
        self.between_rounds: list[Callable[[], None]] = []

    # -- called from outside (notifications) --------------------------------------------

    def notify_ready(self) -> None:
        self.noticed = True
        self.wake.set()

    def notify_cancelled(self, task_id: UUID) -> None:
        execution = self.running.get(task_id)
        if execution is not None:
            self.stopped.add(task_id)
            execution.cancel()

    # -- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        helpers = [asyncio.create_task(self._renew_loop(), name="lease-renewal")]
        try:
            while not stop.is_set():
                try:
                    claimed, asked = await self._claim()
                except Exception:  # the database went away: keep the running work, retry
                    log.exception("claiming failed; trying again after the poll interval")
                    await asyncio.sleep(self.settings.poll_interval)
                    continue
                has_room = len(self.running) < self.settings.concurrency
                if claimed and claimed >= asked and has_room:
                    # The claim filled every slot it was asked to and more have come free
                    # since: there may be more due work, claim again at once, after letting
                    # the attempts just started take their first step (one that ends at once
                    # then has its outcome recorded by that next round). A claim that found
                    # fewer due tasks than slots waits for a wake-up instead (new work
                    # notifies; an attempt's end wakes the loop).
                    await asyncio.sleep(0)
                    continue
                await self._sleep(stop, idle=has_room and claimed == 0)
                await self._let_endings_join()
                await self._let_slots_gather()
        finally:
            await self._shutdown(helpers)

    async def _claim(self) -> tuple[int, int]:
        """Record the outcomes waiting and fill the free slots; return how many started and
        how many slots were free."""
        for hook in self.between_rounds:
            hook()
        # What woke the loop until now (a notice of committed work, an attempt's end) is
        # seen by this round: only what comes after it calls for another.
        self.wake.clear()
        free = max(0, self.settings.concurrency - len(self.running))
        outcomes = self._take_outcomes()
        if free == 0 and not outcomes:
            return 0, 0
        began = time.time_ns() if self.tracing is not None else 0
        try:
            claimed = await self.blocking(
                self.dispatch.claim, self.settings.queues, free, self.settings.worker_id, outcomes
            )
        except Exception:
            if outcomes:
                await self._complete_apart(outcomes)
            raise
        if self.tracing is not None and (claimed or outcomes):
            self.tracing.round(began, claimed, outcomes)
        for attempt in claimed:
            self.running[attempt.task_id] = asyncio.create_task(
                self._execute(attempt), name=f"task-{attempt.task_id}"
            )
        return len(claimed), free

    async def _sleep(self, stop: asyncio.Event, idle: bool) -> None:
        """Wait for a wake-up; when idle, also for the next scheduled task to come due."""
        if self.wake.is_set():  # woken while claiming (an attempt ended, new work)
            self.wake.clear()
            return
        timeout = self.settings.poll_interval
        if idle:
            try:
                due = await self.blocking(
                    self.dispatch.next_due, self.settings.queues
                )
            except Exception:
                log.exception("reading the next due time failed")
                due = None
            # A due task that could not be claimed (paused queue, busy lane) waits for a
            # wake-up or the poll, not a spin.
            until_due = (due - self.clock()).total_seconds() if due is not None else timeout
            if 0 < until_due < timeout:
                timeout = until_due
        waiters = [asyncio.create_task(self.wake.wait()), asyncio.create_task(stop.wait())]
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        self.wake.clear()

    async def _let_endings_join(self) -> None:
        """Woken by a ready notice while attempts run and none has ended: wait a moment
        (``notice_gather``) for one ending meanwhile, so the claim records its outcome too.
        A task that enqueues work and then returns sends the notice just before its end;
        without the wait, one round claims the new task and a second records the end."""
        noticed, self.noticed = self.noticed, False
        if not noticed or not self.running or not self.outcomes.empty():
            return
        self.ended.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), self.settings.notice_gather)

    async def _let_slots_gather(self) -> None:
        """With only a slot or two free, wait a moment so one claim fills several."""
        free = self.settings.concurrency - len(self.running)
        if 0 < free < self.settings.concurrency // 4:
            await asyncio.sleep(self.settings.claim_gather)

    # -- one attempt --------------------------------------------------------------------

    async def _execute(self, attempt: ClaimedAttempt) -> None:
        span: RunSpan | None = None
        if self.tracing is not None:
            span = self.tracing.run(attempt)
            trace = span.trace
        elif attempt.trace:  # telemetry off: the stored context still goes on downstream
            trace = attempt_fields(attempt.trace, attempt.task_id, attempt.attempt)
        else:
            trace = None
        try:
            outcome = await self._run_adapter(attempt, trace)
        except asyncio.CancelledError:
            if attempt.task_id in self.stopped:
                outcome = None  # cancelled or timed out elsewhere: that is already recorded
            else:
                outcome = AttemptOutcome(
                    attempt.task_id,
                    attempt.attempt,
                    Failure("WorkerShutdown", "the worker stopped during the attempt"),
                )
        finally:
            self.running.pop(attempt.task_id, None)
            self.stopped.discard(attempt.task_id)
            self.reported.pop(attempt.task_id, None)
            self.noted_at.pop(attempt.task_id, None)
            self.wake.set()
        if span is not None:
            span.end(outcome)
        if outcome is not None:
            self.outcomes.put_nowait(outcome)
            self.ended.set()

    async def _run_adapter(
        self, attempt: ClaimedAttempt, trace: Mapping[str, str] | None = None
    ) -> AttemptOutcome:
        executor = self.executors.get(attempt.adapter)
        settings = self._settings_of(attempt)
        if executor is None or settings is None:
            what = (
                f"adapter {attempt.adapter!r}"
                if executor is None
                else f"type {attempt.type_name!r}"
            )
            failure = Failure("NotConfigured", f"this worker has no {what}", retryable=False)
            return AttemptOutcome(attempt.task_id, attempt.attempt, failure)
        if attempt.refused is not None:  # its inputs are missing or too large
            return AttemptOutcome(attempt.task_id, attempt.attempt, attempt.refused)
        execution = Execution(
            task_id=attempt.task_id,
            attempt=attempt.attempt,
            type_name=attempt.type_name,
            args=attempt.args,
            settings=settings,
            timeouts=attempt.timeouts,
            inputs=attempt.inputs,
            progress=self._reporter(attempt),
            trace=trace,
        )
        try:
            async with asyncio.timeout(attempt.timeouts.start_to_close):
                result = await executor.run(execution)
        except TimeoutError:
            return AttemptOutcome(attempt.task_id, attempt.attempt, timed_out=True)
        except Exception as error:  # an adapter bug must not kill the worker
            log.exception("adapter %s raised", attempt.adapter)
            result = Failure(type(error).__name__, str(error))
        return AttemptOutcome(attempt.task_id, attempt.attempt, result)

    def _settings_of(self, attempt: ClaimedAttempt) -> dict[str, object] | None:
        if attempt.adhoc_settings is not None:
            return dict(attempt.adhoc_settings)
        task_type = self.registry.task_type(attempt.type_name)
        return dict(task_type.settings) if task_type is not None else None

    def _reporter(self, attempt: ClaimedAttempt) -> Callable[[float | None, str | None], None]:
        """Where the attempt's code reports progress: the latest report replaces the one
        before (coalesced); bad values are dropped, never raised into the task's code, and
        a message's unstorable characters become U+FFFD (``domain/storable.py``)."""

        def report(progress: float | None, message: str | None = None) -> None:
            if attempt.task_id not in self.running:
                return
            if progress is not None:
                if not isinstance(progress, (int, float)) or not math.isfinite(progress):
                    return
                progress = min(1.0, max(0.0, float(progress)))
            text = None if message is None else storable_text(str(message)[:500])
            self.reported[attempt.task_id] = ProgressNote(
                attempt.task_id, attempt.attempt, progress, text
            )

        return report

    def _due_notes(self) -> list[ProgressNote]:
        """The reports to record now: at most one per attempt per ``progress_interval``."""
        now = time.monotonic()
        due = [
            note
            for task_id, note in self.reported.items()
            if now - self.noted_at.get(task_id, -math.inf) >= self.settings.progress_interval
        ]
        for note in due:
            del self.reported[note.task_id]
            self.noted_at[note.task_id] = now
        return due

    # -- helpers ------------------------------------------------------------------------

    def _take_outcomes(self, limit: int = 500) -> list[AttemptOutcome]:
        taken: list[AttemptOutcome] = []
        while not self.outcomes.empty() and len(taken) < limit:
            taken.append(self.outcomes.get_nowait())
        return taken

    async def _complete_apart(self, outcomes: list[AttemptOutcome]) -> bool:
        """Record outcomes on their own (the claim they went with failed); True when they
        are recorded. If the database is away (a failover), they wait for the next round
        rather than for the watchdog, which would run the work again: False. If it is here
        and refused them, one of them cannot be stored: each is recorded alone, so it never
        holds back the others (``_complete_each``). Recording one twice is harmless: the
        outcome of an attempt that already ended is dropped."""
        try:
            await self.blocking(self.dispatch.complete, outcomes)
            return True
        except Exception as error:
            if not database_away(error):
                await self._complete_each(outcomes)
                return True
            log.exception("recording %d outcomes failed; the next round tries again", len(outcomes))
            for outcome in outcomes:
                self.outcomes.put_nowait(outcome)
            return False

    async def _complete_each(self, outcomes: list[AttemptOutcome]) -> None:
        """Record each outcome alone; one the store still refuses is recorded as the
        failure ``UnstorableOutcome`` instead (not retried: the code would give the same),
        and if even that is refused, left to the watchdog (its lease runs out)."""
        for outcome in outcomes:
            for attempt in (outcome, unstorable_outcome(outcome)):
                try:
                    await self.blocking(self.dispatch.complete, [attempt])
                    break
                except Exception as error:
                    if database_away(error):
                        self.outcomes.put_nowait(outcome)
                        break
                    log.exception(
                        "the outcome of attempt %d of task %s could not be stored",
                        outcome.attempt,
                        outcome.task_id,
                    )

    async def _renew_loop(self) -> None:
        """Renew the leases of the running attempts every interval, until cancelled.

        Not bound to ``stop``: during a graceful shutdown the attempts still run (and are
        still this worker's) until they end or the worker cancels them, so their leases
        must outlive the stop signal, or another node's watchdog times them out.
        """
        while True:
            await asyncio.sleep(self.settings.renew_interval)
            held = list(self.running)
            notes = self._due_notes()
            try:
                kept = await self.blocking(
                    self.dispatch.renew, self.settings.worker_id, held, notes
                )
            except Exception:
                log.exception("lease renewal failed")
                continue
            for task_id in held:
                if task_id not in kept:
                    self.notify_cancelled(task_id)

    async def _shutdown(self, helpers: list[asyncio.Task[None]]) -> None:
        """The loop has stopped claiming. Let the running attempts finish for up to
        ``shutdown_grace``, recording each outcome as it arrives; cancel the rest (each
        becomes ``Failure("WorkerShutdown")``) and record them; only then stop renewing
        leases (``helpers``)."""
        try:
            await self._finish_running(self.settings.shutdown_grace)
            for execution in list(self.running.values()):
                execution.cancel()
            await self._finish_running(self.settings.shutdown_grace)
            await self._record_outstanding(self.settings.shutdown_grace)
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _finish_running(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the running attempts to end, recording the
        outcomes of those that do as they come."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.running:
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.wait(
                list(self.running.values()), timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            await self._record_outstanding()

    async def _record_outstanding(self, grace: float | None = None) -> None:
        """Record the outcomes waiting. While the database is away they stay waiting, or,
        given ``grace``, are tried again after a pause (doubling up to a second) for up to
        ``grace`` seconds; those still not recorded then are left to the watchdog (their
        leases run out; the attempts are timed out and retried by their policy)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (grace or 0.0)
        pause = 0.05
        while not self.outcomes.empty():
            if await self._complete_apart(self._take_outcomes()):
                continue
            if grace is None:
                return
            if loop.time() + pause > deadline:
                left = self._take_outcomes(limit=self.outcomes.qsize())
                log.warning(
                    "%d outcomes not recorded (the database is away); the watchdog will "
                    "time those attempts out",
                    len(left),
                )
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
