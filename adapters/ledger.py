"""The Python API of the ledger: enqueue one task or a whole DAG atomically, cancel, retry,
and read a task and its history. Application code that shares the database uses this."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
from eventsourcing.persistence import IntegrityError

from execution_ledger.adapters.bulk_actions import (
    BulkActions,
    BulkPreview,
    BulkRequest,
    Permit,
    allow_all,
)
from execution_ledger.adapters.coalesced_enqueue import CoalescedEnqueue
from execution_ledger.adapters.collector_pause import collector_paused
from execution_ledger.adapters.config_file import settings_check
from execution_ledger.adapters.off_loop import run_off_loop
from execution_ledger.adapters.postgres.concurrent_write import AGAIN, Again, retry_on_conflict
from execution_ledger.adapters.postgres.event_store import EventStore, RecordedEvent
from execution_ledger.adapters.postgres.recorder import Statement
from execution_ledger.adapters.postgres.running import RunningTables
from execution_ledger.adapters.telemetry.context import ledger_enqueue_trace
from execution_ledger.domain.access import AccessDenial, DenialBudget
from execution_ledger.domain.bulk import BulkAction
from execution_ledger.domain.children import notify_parents
from execution_ledger.domain.errors import (
    IdempotencyKeyTaken,
    InvalidSubmission,
    TaskNotFound,
    UnknownQueue,
    UnknownSchedule,
)
from execution_ledger.domain.queue import Queue
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.schedule_control import ScheduleControl
from execution_ledger.domain.signals import check_signal, check_signaller
from execution_ledger.domain.submission import (
    Requester,
    SubmissionContext,
    TaskRequest,
    plan_tasks,
    stored_states,
)
from execution_ledger.domain.task import Task, TaskState

SYSTEM = Requester(principal="system", role="admin")
_denials = DenialBudget()  # per process, shared by every ledger of it


@dataclass(frozen=True)
class _Switch:
    """A pausable thing (queue, schedule): how to load its aggregate, how to set its flag."""

    label: str
    load: Callable[[], Queue | ScheduleControl]
    flag: Callable[[bool], Statement]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Ledger:
    def __init__(
        self,
        store: EventStore,
        registry: Registry,
        clock: Callable[[], datetime] = utc_now,
        new_id: Callable[[], UUID] = uuid4,
        adapter_defaults: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self.store = store
        self.running = RunningTables(store.schema)
        self.coalescing = CoalescedEnqueue(store)
        self.registry = registry
        self.clock = clock
        self.new_id = new_id
        self.adapter_defaults = dict(adapter_defaults or {})  # checked with ad-hoc settings

    # -- enqueueing ---------------------------------------------------------------------

    def enqueue(self, request: TaskRequest, requester: Requester = SYSTEM) -> Task:
        """Validate and store one task; returns it (its ``id`` names it from now on).

        With an idempotency key that a live task holds, nothing is stored and that task is
        returned (``enqueue_once`` also says which happened)."""
        return self.enqueue_once(request, requester)[0]

    def enqueue_in(
        self,
        connection: psycopg.Connection[Any],
        requests: Sequence[TaskRequest],
        requester: Requester = SYSTEM,
    ) -> list[Task]:
        """Enqueue inside the caller's own open transaction on ``connection`` (same
        database): the tasks exist if and only if the caller commits."""
        if connection.autocommit or connection.info.transaction_status.name != "INTRANS":
            raise InvalidSubmission(
                "enqueue_in needs a connection inside an open transaction "
                "(autocommit off, after a first statement, or within `with conn.transaction()`)"
            )
        with (
            collector_paused(len(requests)),
            ledger_enqueue_trace(requests, "enqueue_in") as trace,
        ):
            tasks, inline = self._plan(trace.carry_all(requests), requester)
            self.store.append_in(self.store.adopt(connection), tasks, inline)
            trace.enqueued(tasks)
        return tasks

    def enqueue_once(
        self, request: TaskRequest, requester: Requester = SYSTEM
    ) -> tuple[Task, bool]:
        """The task and True if it was created; the key's holder and False if not."""
        task, created, _ = self.enqueue_recorded(request, requester)
        return task, created

    def enqueue_recorded(
        self, request: TaskRequest, requester: Requester = SYSTEM
    ) -> tuple[Task, bool, list[RecordedEvent]]:
        """As ``enqueue_once``, with the events stored for a new task and their positions
        (none for a key's holder, which is read from the log)."""
        with ledger_enqueue_trace([request], "enqueue") as trace:
            task, created, recorded = self._enqueue_recorded(trace.carry(request), requester)
            trace.enqueued([task], created)
        return task, created, recorded

    def _enqueue_recorded(
        self, request: TaskRequest, requester: Requester
    ) -> tuple[Task, bool, list[RecordedEvent]]:
        def look_and_enqueue() -> tuple[Task, bool, list[RecordedEvent]] | Again:
            holders = self._key_holders([request])
            if holders:
                return self.store.load(next(iter(holders.values()))), False, []
            tasks, inline = self._plan([request], requester, keys_checked=True)
            task = tasks[0]
            if task.singleton_key is not None or task.debounce_key is not None:
                done = self.coalescing.try_enqueue(task, inline, request, requester)
                # None: its key met a concurrent enqueue or start, look again.
                return AGAIN if done is None else done
            recorded = self.store.save(*tasks, inline=inline)
            return task, True, recorded

        # A conflict is another enqueue taking the idempotency key between our look and our
        # save (look again: it answers with the holder); without a key, it is raised.
        return retry_on_conflict(
            look_and_enqueue,
            what=f"the keys of this {request.type_name!r} task",
            is_conflict=lambda _error: request.idempotency_key is not None,
        )

    async def enqueue_recorded_async(
        self,
        request: TaskRequest,
        requester: Requester = SYSTEM,
        executor: Executor | None = None,
    ) -> tuple[Task, bool, list[RecordedEvent]]:
        """``enqueue_recorded`` for a caller on an event loop. A task that needs no read
        first (no idempotency key, singleton or debounce) is planned on the loop and commits
        there, with the loop's other saves (``EventStore.save_async``); any other
        runs ``enqueue_recorded`` in a thread of ``executor``, with the caller's context."""
        with ledger_enqueue_trace([request], "enqueue") as trace:
            request = trace.carry(request)
            if self._reads_before_saving(request):
                done = await run_off_loop(executor, self._enqueue_recorded, request, requester)
            else:
                tasks, inline = self._plan([request], requester, keys_checked=True)
                recorded = await self.store.save_async(*tasks, inline=inline)
                done = tasks[0], True, recorded
            trace.enqueued([done[0]], done[1])
        return done

    def _reads_before_saving(self, request: TaskRequest) -> bool:
        """Whether enqueueing ``request`` looks up a key first: an idempotency key, or a
        singleton or debounce key (its own, or its type's singleton template)."""
        task_type = self.registry.task_type(request.type_name)
        return (
            request.idempotency_key is not None
            or request.singleton is not None
            or request.debounce is not None
            or (task_type is not None and task_type.singleton is not None)
        )

    def enqueue_graph(
        self, requests: Sequence[TaskRequest], requester: Requester = SYSTEM
    ) -> list[Task]:
        """Store all tasks in one transaction, or none: refs name tasks of the same call."""
        with (
            collector_paused(len(requests)),
            ledger_enqueue_trace(requests, "enqueue_graph") as trace,
        ):
            tasks, inline = self._plan(trace.carry_all(requests), requester)
            self.store.save(*tasks, inline=inline)
            trace.enqueued(tasks)
        return tasks

    def _plan(
        self, requests: Sequence[TaskRequest], requester: Requester, keys_checked: bool = False
    ) -> tuple[list[Task], list[Statement]]:
        """The new tasks, and the statements that must commit with them (their keys).

        A key named twice, or held by a live task, is refused (unless ``keys_checked``: the
        caller looked already and wants the holder back rather than an error)."""
        context = SubmissionContext(
            registry=self.registry,
            requester=requester,
            now=self.clock(),
            new_id=self.new_id,
            adapter_check=settings_check(self.adapter_defaults),
        )
        graph_id = self.new_id() if len(requests) > 1 else None
        tasks = plan_tasks(context, requests, stored_states(requests, self.store.load), graph_id)
        keys = [r.idempotency_key for r in requests if r.idempotency_key is not None]
        if len(set(keys)) != len(keys):
            raise IdempotencyKeyTaken("an idempotency key is named twice in this submission")
        if not keys_checked:
            for key, holder in self._key_holders(requests).items():
                raise IdempotencyKeyTaken(f"idempotency key {key!r} is held by task {holder}")
        inline = self._keys_taken(tasks, requests, context.now)
        if not keys_checked:  # a graph or enqueue_in: singleton keys taken (or refused) here
            inline += self.coalescing.statements_for_graph(tasks)
        return tasks, inline

    def _key_holders(self, requests: Sequence[TaskRequest]) -> dict[str, UUID]:
        keys = [r.idempotency_key for r in requests if r.idempotency_key is not None]
        if not keys:
            return {}
        holders = self.running.key_holders(keys)
        with self.store.transaction() as cursor:
            rows = cursor.execute(holders.query, holders.params).fetchall()
        return {row["key"]: row["task_id"] for row in rows}

    def _keys_taken(
        self, tasks: Sequence[Task], requests: Sequence[TaskRequest], now: datetime
    ) -> list[Statement]:
        periods = {r.idempotency_key: r.idempotency_period for r in requests}
        taken = []
        for task in tasks:
            if task.idempotency_key is not None:
                period = periods.get(task.idempotency_key)
                expires = None if period is None else now + timedelta(seconds=period)
                taken.append((task.idempotency_key, task.id, expires))
        return self.running.keys_taken(taken)


    # -- changing a task ----------------------------------------------------------------

    def cancel(self, task_id: UUID, by: str = SYSTEM.principal, reason: str = "") -> Task:
        """Cancel a waiting or running task; a running attempt's worker stops it at once."""

        def cancel(task: Task) -> list[Statement]:
            running = task.state is TaskState.RUNNING
            task.cancel(by=by, reason=reason)
            if not running:
                return []
            return self.running.attempts_stopped([task.id])

        return self._change(task_id, cancel)

    def signal(
        self, task_id: UUID, name: str, data: Any = None, requester: Requester = SYSTEM
    ) -> Task:
        """Deliver the signal ``name`` (with JSON ``data``) to a task waiting for it; the
        last one it waits for makes it ready (``domain/signals.py`` says who may)."""
        check_signal(self.registry, requester, name, data)

        def deliver(task: Task) -> list[Statement]:
            check_signaller(self.registry, requester, task)
            task.signal(name, data, by=requester.principal, now=self.clock())
            return []

        return self._change(task_id, deliver)

    def retry(self, task_id: UUID, by: str = SYSTEM.principal) -> Task:
        """Run a failed, cancelled or skipped task again (one more attempt)."""

        def retry(task: Task) -> list[Statement]:
            task.retry_manually(self.clock(), by=by)
            return self.coalescing.retaken(task)  # its singleton key, if it had one

        return self._change(task_id, retry)

    def pause_queue(self, name: str, by: str = SYSTEM.principal) -> None:
        """Stop claiming from ``name`` on every node; running attempts finish."""
        self._switch(self._queue_switch(name), by, paused=True)

    def resume_queue(self, name: str, by: str = SYSTEM.principal) -> None:
        self._switch(self._queue_switch(name), by, paused=False)

    def pause_schedule(self, name: str, by: str = SYSTEM.principal) -> None:
        """Stop firing ``name``'s ticks on every node (ticks while paused are not caught up)."""
        self._switch(self._schedule_switch(name), by, paused=True)

    def resume_schedule(self, name: str, by: str = SYSTEM.principal) -> None:
        self._switch(self._schedule_switch(name), by, paused=False)

    def pause_configured(self) -> None:
        """Queues and schedules marked ``paused = true`` start paused the first time the
        ledger sees them; from then on their stored events (pause, resume) decide."""
        switches = [self._queue_switch(n) for n, q in self.registry.queues.items() if q.paused]
        switches += [
            self._schedule_switch(n) for n, s in self.registry.schedules.items() if s.paused
        ]
        for switch in switches:
            aggregate = switch.load()
            if not aggregate.pending_events:
                continue  # already stored: its history decides
            aggregate.pause(by="config")
            with contextlib.suppress(IntegrityError):  # another process stored it first
                self.store.save(aggregate, inline=[switch.flag(True)])

    def _queue_switch(self, name: str) -> _Switch:
        if name not in self.registry.queues:
            known = ", ".join(sorted(self.registry.queues))
            raise UnknownQueue(f"unknown queue {name!r} (known: {known})")
        return _Switch(
            f"queue {name!r}",
            lambda: self.store.load_queue(name),
            lambda paused: self.running.set_paused(name, paused),
        )

    def _schedule_switch(self, name: str) -> _Switch:
        if (
            name not in self.registry.schedules
            and self.store.load_schedule_control(name).definition is None  # not run-time
        ):
            known = ", ".join(sorted(self.registry.schedules)) or "none"
            raise UnknownSchedule(f"unknown schedule {name!r} (known: {known})")
        return _Switch(
            f"schedule {name!r}",
            lambda: self.store.load_schedule_control(name),
            lambda paused: self.running.set_schedule_paused(name, paused),
        )

    def _switch(self, switch: _Switch, by: str, paused: bool) -> None:
        def load_switch_save() -> None:
            aggregate = switch.load()
            if paused:
                aggregate.pause(by)
            else:
                aggregate.resume(by)
            self.store.save(aggregate, inline=[switch.flag(paused)])

        retry_on_conflict(load_switch_save, what=switch.label)

    def _change(self, task_id: UUID, change: Callable[[Task], list[Statement]]) -> Task:
        """Load, change, save; on a concurrent write, reload and decide again."""

        def load_change_save() -> Task:
            task = self.store.load(task_id)
            inline = change(task)
            parents = notify_parents([task], self.store.load_many)  # an awaited child ended
            self.store.save(task, *parents, inline=inline)
            return task

        return retry_on_conflict(load_change_save, what=f"task {task_id}")

    # -- bulk actions (adapters/bulk_actions.py) ----------------------------------------

    def bulk_preview(self, request: BulkRequest, permit: Permit = allow_all) -> BulkPreview:
        """How many tasks a bulk action would change now, and a sample; writes nothing."""
        return self._bulk_actions().preview(request, permit)

    def bulk_request(
        self, request: BulkRequest, requester: Requester = SYSTEM, permit: Permit = allow_all
    ) -> BulkAction:
        """Record a bulk action (``BulkActionRequested``); ``bulk_run`` carries it out."""
        return self._bulk_actions().request(request, requester, permit)

    def bulk_run(
        self,
        bulk_id: UUID,
        permit: Permit = allow_all,
        progress: Callable[[BulkAction], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> BulkAction:
        """Change the matches of a recorded bulk action in bounded batches."""
        return self._bulk_actions().run(bulk_id, permit, progress, should_stop)

    def bulk_action(self, bulk_id: UUID) -> BulkAction:
        return self._bulk_actions().load(bulk_id)

    def _bulk_actions(self) -> BulkActions:
        return BulkActions(
            self.store, self.registry, self.clock, self.running, retake=self.coalescing.retaken
        )

    # -- refusals -----------------------------------------------------------------------

    def record_denial(self, principal: str, action: str, reason: str) -> bool:
        """Record a refused request as an ``AccessDenied`` event (a way in refused it: a bad
        token, a role, an ad-hoc task or setting the policy does not allow). At most
        ``DENIALS_PER_MINUTE`` a minute per principal and process are recorded; returns
        whether this one was."""
        key = f"{self.store.schema}:{principal}"
        if not _denials.allow(key, time.monotonic()):
            return False
        self.store.save(AccessDenial.record(principal, action, reason))
        return True

    # -- reading ------------------------------------------------------------------------

    def task(self, task_id: UUID) -> Task:
        return self.store.load(task_id)

    def history(self, task_id: UUID) -> list[RecordedEvent]:
        events = self.store.history(task_id)
        if not events:
            raise TaskNotFound(f"no task {task_id}")
        return events
