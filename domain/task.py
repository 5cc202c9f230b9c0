"""The Task aggregate: one request to run a task type, and its life cycle as events.

Every state change is an event method below; public methods check the transition first and
raise ``InvalidTransition`` rather than record an event the life cycle does not allow.

States: blocked -> (unblocked) -> ready | scheduled -> running -> succeeded | failed;
failed -> (retry scheduled) -> scheduled; any non-terminal -> cancelled; blocked -> skipped.
Workflows add ``waiting``: a task whose type needs signals before it runs waits for them
(``TaskSignalled`` moves it on), and an attempt that spawned children to wait for ends in
``waiting`` until its children end (``TaskChildEnded`` for each, then its outcome).
A task not yet started (blocked, scheduled, ready) may be given another priority
(``TaskReprioritised``) or queue (``TaskMoved``); its state stays as it was.
"""

from __future__ import annotations

import inspect
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from execution_ledger.domain.errors import InvalidTransition
from execution_ledger.domain.stored_topics import pin_topics
from execution_ledger.domain.timeouts import TimeoutKind


class TaskState(StrEnum):
    BLOCKED = "blocked"
    SCHEDULED = "scheduled"
    READY = "ready"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    WAITING = "waiting"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED}
)
CANCELLABLE_STATES = frozenset(
    {TaskState.BLOCKED, TaskState.SCHEDULED, TaskState.READY, TaskState.RUNNING, TaskState.WAITING}
)
RETRYABLE_STATES = frozenset({TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED})
# Not yet started: the states in which a task's priority and queue may still change.
WAITING_STATES = frozenset({TaskState.BLOCKED, TaskState.SCHEDULED, TaskState.READY})
# Kinds after which the task is over, whatever its retry policy says.
FINAL_TIMEOUT_KINDS = frozenset(
    {TimeoutKind.SCHEDULE_TO_START, TimeoutKind.SCHEDULE_TO_CLOSE, TimeoutKind.SIGNAL_WAIT}
)


class Task(Aggregate):
    """A task and its attempts. Created by ``TaskEnqueued``."""

    class TaskEnqueued(Aggregate.Created):
        type_name: str
        adapter: str
        args: dict[str, Any]
        queue: str
        priority: int
        depends_on: list[UUID]
        run_at: datetime | None
        lane: str | None
        idempotency_key: str | None
        principal: str
        role: str
        tags: list[str]
        timeouts: dict[str, float | None]
        retry: dict[str, Any]
        initial_state: str
        graph_id: UUID | None
        ref: str | None
        adapter_settings: dict[str, Any] | None
        # Workflow fields (defaults, so events stored before them still load):
        inputs: dict[str, UUID] | None = None  # input name -> dependency whose result it is
        parent_id: UUID | None = None  # the task that spawned this one at run time
        depth: int = 0  # 0 for a submitted task, parent's depth + 1 for a child
        signals: list[str] | None = None  # signals needed before the first start
        # W3C trace context it was enqueued in ({"traceparent", "tracestate"}), or None:
        trace: dict[str, str] | None = None
        # Coalescing keys (``domain/coalescing.py``), scoped to the task type:
        singleton_key: str | None = None  # at most one queued-or-running task holds it
        debounce_key: str | None = None  # submissions coalesce into it until it starts
        fair_key: str | None = None  # its queue's fair_key template filled (domain/rate_limits.py)
        registry_version: int | None = None  # the registry version it was enqueued under

    @event(TaskEnqueued)
    def __init__(
        self,
        id: UUID,
        type_name: str,
        adapter: str,
        args: dict[str, Any],
        queue: str,
        priority: int,
        depends_on: list[UUID],
        run_at: datetime | None,
        lane: str | None,
        idempotency_key: str | None,
        principal: str,
        role: str,
        tags: list[str],
        timeouts: dict[str, float | None],
        retry: dict[str, Any],
        initial_state: str,
        graph_id: UUID | None,
        ref: str | None,
        adapter_settings: dict[str, Any] | None,
        inputs: dict[str, UUID] | None = None,
        parent_id: UUID | None = None,
        depth: int = 0,
        signals: list[str] | None = None,
        trace: dict[str, str] | None = None,
        singleton_key: str | None = None,
        debounce_key: str | None = None,
        fair_key: str | None = None,
        registry_version: int | None = None,
    ) -> None:
        self.type_name = type_name
        self.adapter = adapter
        self.args = args
        self.queue = queue
        self.priority = priority
        self.depends_on = list(depends_on)
        self.run_at = run_at
        self.lane = lane
        self.idempotency_key = idempotency_key
        self.principal = principal
        self.role = role
        self.tags = list(tags)
        self.timeouts = dict(timeouts)
        self.retry = dict(retry)
        self.graph_id = graph_id
        self.ref = ref
        self.adapter_settings = adapter_settings
        self.state = TaskState(initial_state)
        self.max_attempts = int(retry.get("max_attempts", 1))
        self.attempts = 0
        self.worker: str | None = None
        self.lease_expires_at: datetime | None = None
        self.result: Any = None
        self.error: dict[str, Any] | None = None
        self.timeout_kind: str | None = None
        self.inputs = dict(inputs) if inputs else None
        self.parent_id = parent_id
        self.depth = depth
        self.awaited_signals = list(signals or [])  # still to come
        self.signals: dict[str, Any] = {}  # name -> data, as delivered
        self.progress: float | None = None
        self.progress_message: str | None = None
        self.children: list[UUID] = []
        self.children_ended: dict[UUID, str] = {}
        self.child_results: dict[UUID, Any] = {}
        self.on_child_failure = "fail"
        self.held: dict[str, Any] | None = None  # the waiting attempt's result and details
        self.singleton_key = singleton_key
        self.debounce_key = debounce_key
        self.fair_key = fair_key
        self.trace = dict(trace) if trace else None
        self.enqueued_registry_version = registry_version
        self.run_registry_version: int | None = None  # of the latest attempt's start

    # -- dependencies -------------------------------------------------------------------

    class TaskUnblocked(Aggregate.Event):
        state: str

    def unblock(self, now: datetime) -> None:
        """All dependencies succeeded: become ready, or scheduled if ``run_at`` is later."""
        self._require({TaskState.BLOCKED}, "unblock")
        if self.awaited_signals:
            self._unblocked(state=TaskState.WAITING.value)
            return
        due = self.run_at is None or self.run_at <= now
        self._unblocked(state=(TaskState.READY if due else TaskState.SCHEDULED).value)

    @event(TaskUnblocked)
    def _unblocked(self, state: str) -> None:
        self.state = TaskState(state)

    class TaskSkipped(Aggregate.Event):
        reason: str
        dependency: UUID

    def skip(self, reason: str, dependency: UUID) -> None:
        """A dependency ended other than succeeded, so this task will never run."""
        self._require({TaskState.BLOCKED}, "skip")
        self._skipped(reason=reason, dependency=dependency)

    @event(TaskSkipped)
    def _skipped(self, reason: str, dependency: UUID) -> None:
        self.state = TaskState.SKIPPED

    # -- attempts -----------------------------------------------------------------------

    def is_due(self, now: datetime) -> bool:
        """True when the task may be started now."""
        if self.state is TaskState.READY:
            return True
        return self.state is TaskState.SCHEDULED and (self.run_at is None or self.run_at <= now)

    class TaskStarted(Aggregate.Event):
        attempt: int
        worker: str
        lease_expires_at: datetime
        registry_version: int | None = None  # the registry version the worker runs

    def start(
        self,
        worker: str,
        lease_expires_at: datetime,
        now: datetime,
        registry_version: int | None = None,
    ) -> int:
        """Claim the next attempt for ``worker``; returns the attempt number."""
        if not self.is_due(now):
            raise InvalidTransition(
                f"task {self.id} cannot start: it is {self.state.value}"
                + (" and not yet due" if self.state is TaskState.SCHEDULED else "")
            )
        attempt = self.attempts + 1
        self._started(
            attempt=attempt,
            worker=worker,
            lease_expires_at=lease_expires_at,
            registry_version=registry_version,
        )
        return attempt

    @event(TaskStarted)
    def _started(
        self,
        attempt: int,
        worker: str,
        lease_expires_at: datetime,
        registry_version: int | None = None,
    ) -> None:
        self.state = TaskState.RUNNING
        self.run_registry_version = registry_version
        self.attempts = attempt
        self.worker = worker
        self.lease_expires_at = lease_expires_at
        self.held = None  # a result held by an earlier attempt is not this one's

    class TaskHeartbeat(Aggregate.Event):
        attempt: int
        lease_expires_at: datetime
        progress: float | None = None  # 0..1, reported by the task's code
        message: str | None = None

    def heartbeat(
        self,
        attempt: int,
        lease_expires_at: datetime,
        progress: float | None = None,
        message: str | None = None,
    ) -> None:
        self._require_current(attempt, "heartbeat")
        self._heartbeat(
            attempt=attempt, lease_expires_at=lease_expires_at, progress=progress, message=message
        )

    @event(TaskHeartbeat)
    def _heartbeat(
        self,
        attempt: int,
        lease_expires_at: datetime,
        progress: float | None = None,
        message: str | None = None,
    ) -> None:
        self.lease_expires_at = lease_expires_at
        if progress is not None or message is not None:
            self.progress = progress
            self.progress_message = message

    class TaskSucceeded(Aggregate.Event):
        attempt: int
        result: Any
        details: dict[str, Any]

    def succeed(self, attempt: int, result: Any, details: dict[str, Any] | None = None) -> None:
        self._require_current(attempt, "succeed")
        self._succeeded(attempt=attempt, result=result, details=details or {})

    @event(TaskSucceeded)
    def _succeeded(self, attempt: int, result: Any, details: dict[str, Any]) -> None:
        self.state = TaskState.SUCCEEDED
        self.result = result
        self.error = None
        self.lease_expires_at = None

    class TaskFailed(Aggregate.Event):
        attempt: int
        error_class: str
        message: str
        retryable: bool
        details: dict[str, Any]

    def fail(
        self,
        attempt: int,
        error_class: str,
        message: str,
        retryable: bool = True,
        details: dict[str, Any] | None = None,
    ) -> None:
        self._require_current(attempt, "fail")
        self._failed(
            attempt=attempt,
            error_class=error_class,
            message=message,
            retryable=retryable,
            details=details or {},
        )

    @event(TaskFailed)
    def _failed(
        self, attempt: int, error_class: str, message: str, retryable: bool, details: dict[str, Any]
    ) -> None:
        self.state = TaskState.FAILED
        self.error = {"class": error_class, "message": message, "retryable": retryable}
        self.lease_expires_at = None

    class TaskTimedOut(Aggregate.Event):
        kind: str
        attempt: int | None

    def time_out(self, kind: TimeoutKind) -> None:
        """Record that a timeout of ``kind`` fired; the task is failed unless retried."""
        if kind in (TimeoutKind.START_TO_CLOSE, TimeoutKind.HEARTBEAT):
            self._require({TaskState.RUNNING}, f"time out ({kind.value})")
            attempt: int | None = self.attempts
        elif kind is TimeoutKind.SIGNAL_WAIT:
            self._require({TaskState.WAITING}, f"time out ({kind.value})")
            attempt = None
        elif kind is TimeoutKind.SCHEDULE_TO_START:
            self._require(WAITING_STATES - {TaskState.BLOCKED}, f"time out ({kind.value})")
            attempt = None
        else:
            self._require(CANCELLABLE_STATES, f"time out ({kind.value})")
            attempt = self.attempts if self.state is TaskState.RUNNING else None
        self._timed_out(kind=kind.value, attempt=attempt)

    @event(TaskTimedOut)
    def _timed_out(self, kind: str, attempt: int | None) -> None:
        self.state = TaskState.FAILED
        self.timeout_kind = kind
        self.error = {"class": "Timeout", "message": f"{kind} timeout", "retryable": True}
        self.lease_expires_at = None

    class TaskRetryScheduled(Aggregate.Event):
        retry_at: datetime
        manual: bool
        by: str | None
        bulk_id: UUID | None = None  # the bulk action that asked for it, if one did

    def schedule_retry(self, retry_at: datetime) -> None:
        """Automatic retry after a failed attempt, within the attempts budget."""
        self._require({TaskState.FAILED}, "retry")
        if self.timeout_kind in {k.value for k in FINAL_TIMEOUT_KINDS}:
            raise InvalidTransition(f"task {self.id} timed out ({self.timeout_kind}); it is over")
        if self.attempts >= self.max_attempts:
            raise InvalidTransition(f"task {self.id} has used all {self.max_attempts} attempts")
        self._retry_scheduled(retry_at=retry_at, manual=False, by=None)

    def retry_manually(self, retry_at: datetime, by: str, bulk_id: UUID | None = None) -> None:
        """A person asks to run a failed, cancelled or skipped task again (one more attempt)."""
        self._require(RETRYABLE_STATES, "retry")
        if self.timeout_kind == TimeoutKind.SCHEDULE_TO_CLOSE.value:
            raise InvalidTransition(
                f"task {self.id} is past its schedule_to_close deadline; enqueue it again"
            )
        self._retry_scheduled(retry_at=retry_at, manual=True, by=by, bulk_id=bulk_id)

    @event(TaskRetryScheduled)
    def _retry_scheduled(
        self, retry_at: datetime, manual: bool, by: str | None, bulk_id: UUID | None = None
    ) -> None:
        self.state = TaskState.SCHEDULED
        self.run_at = retry_at
        self.timeout_kind = None
        if manual:
            self.max_attempts = max(self.max_attempts, self.attempts + 1)

    class TaskCancelled(Aggregate.Event):
        by: str
        reason: str
        bulk_id: UUID | None = None  # the bulk action that asked for it, if one did

    def cancel(self, by: str, reason: str = "", bulk_id: UUID | None = None) -> None:
        self._require(CANCELLABLE_STATES, "cancel")
        self._cancelled(by=by, reason=reason, bulk_id=bulk_id)

    @event(TaskCancelled)
    def _cancelled(self, by: str, reason: str, bulk_id: UUID | None = None) -> None:
        self.state = TaskState.CANCELLED
        self.lease_expires_at = None

    # -- placement: priority and queue, changed while the task waits to start ------------

    class TaskReprioritised(Aggregate.Event):
        priority: int
        state: str  # unchanged: the state it waits in (the read models set it as for others)
        by: str
        bulk_id: UUID | None = None

    def reprioritise(self, priority: int, by: str, bulk_id: UUID | None = None) -> None:
        """Claim it before (higher) or after (lower) the other tasks of its queue."""
        self._require(WAITING_STATES, "reprioritise")
        self._reprioritised(priority=priority, state=self.state.value, by=by, bulk_id=bulk_id)

    @event(TaskReprioritised)
    def _reprioritised(
        self, priority: int, state: str, by: str, bulk_id: UUID | None = None
    ) -> None:
        self.priority = priority

    class TaskMoved(Aggregate.Event):
        queue: str
        state: str  # unchanged, as for ``TaskReprioritised``
        by: str
        bulk_id: UUID | None = None

    def move(self, queue: str, by: str, bulk_id: UUID | None = None) -> None:
        """Run it in ``queue`` (a declared queue: the caller checks) from now on."""
        self._require(WAITING_STATES, "move")
        self._moved(queue=queue, state=self.state.value, by=by, bulk_id=bulk_id)

    @event(TaskMoved)
    def _moved(self, queue: str, state: str, by: str, bulk_id: UUID | None = None) -> None:
        self.queue = queue

    # -- debounce -----------------------------------------------------------------------

    class TaskDebounced(Aggregate.Event):
        args: dict[str, Any]  # the coalesced submission's args
        run_at: datetime  # the new start time: the window after this submission
        by: str  # the submission's principal
        replaces_args: bool  # mode "last": these args are the task's from now on
        state: str  # the state after it (scheduled; blocked or waiting stay as they were)

    def debounce(self, args: dict[str, Any], run_at: datetime, by: str, replace: bool) -> None:
        """A later submission with the task's debounce key: the task runs once ``run_at``
        is reached, with these ``args`` if ``replace``. Only before its first start."""
        self._require(DEBOUNCEABLE_STATES, "debounce")
        if self.attempts:
            raise InvalidTransition(f"cannot debounce task {self.id}: it has started")
        held = self.state in (TaskState.BLOCKED, TaskState.WAITING)
        state = self.state if held else TaskState.SCHEDULED
        self._debounced(args=args, run_at=run_at, by=by, replaces_args=replace, state=state.value)

    @event(TaskDebounced)
    def _debounced(
        self, args: dict[str, Any], run_at: datetime, by: str, replaces_args: bool, state: str
    ) -> None:
        if replaces_args:
            self.args = dict(args)
        self.run_at = run_at
        self.state = TaskState(state)

    # -- workflows: signals and children ------------------------------------------------

    class TaskSignalled(Aggregate.Event):
        name: str
        data: Any
        by: str
        state: str  # the state after it (waiting until the last awaited signal comes)

    def signal(self, name: str, data: Any, by: str, now: datetime) -> None:
        """Deliver the signal ``name``; the last one awaited makes the task ready."""
        if self.state.is_terminal:
            raise InvalidTransition(f"cannot signal task {self.id}: it is {self.state.value}")
        if name not in self.awaited_signals:
            awaited = ", ".join(self.awaited_signals) or "none"
            raise InvalidTransition(
                f"task {self.id} does not wait for the signal {name!r} (it waits for: {awaited})"
            )
        state = self.state
        last = self.awaited_signals == [name]
        if state is TaskState.WAITING and last and self.held is not None:
            state = TaskState.SUCCEEDED  # it waited to finish: its held result is its own
        elif state is TaskState.WAITING and last and not self.children:
            due = self.run_at is None or self.run_at <= now
            state = TaskState.READY if due else TaskState.SCHEDULED
        if state is TaskState.SUCCEEDED:
            self._signalled(name=name, data=data, by=by, state=TaskState.WAITING.value)
            held = self.held or {}
            self._succeeded(
                attempt=self.attempts,
                result=held.get("result"),
                details=dict(held.get("details") or {}),
            )
            return
        self._signalled(name=name, data=data, by=by, state=state.value)

    @event(TaskSignalled)
    def _signalled(self, name: str, data: Any, by: str, state: str) -> None:
        self.awaited_signals = [s for s in self.awaited_signals if s != name]
        self.signals[name] = data
        self.state = TaskState(state)

    class TaskChildrenSpawned(Aggregate.Event):
        attempt: int
        children: list[UUID]
        wait: bool
        on_child_failure: str  # "fail" or "ignore"
        result: Any  # the attempt's own result, held until the children end
        details: dict[str, Any]
        state: str  # "waiting" when it waits; else "running" (its TaskSucceeded follows)

    def spawn_children(
        self,
        attempt: int,
        children: list[UUID],
        wait: bool,
        on_child_failure: str,
        result: Any,
        details: dict[str, Any],
    ) -> None:
        """The attempt ended by spawning ``children``: wait for them, or succeed at once."""
        self._require_current(attempt, "spawn children of")
        waits = wait and bool(children)
        self._children_spawned(
            attempt=attempt,
            children=children,
            wait=waits,
            on_child_failure=on_child_failure,
            result=result,
            details=details,
            state=(TaskState.WAITING if waits else TaskState.RUNNING).value,
        )
        if not waits:
            self.succeed(attempt, result, details)

    @event(TaskChildrenSpawned)
    def _children_spawned(
        self,
        attempt: int,
        children: list[UUID],
        wait: bool,
        on_child_failure: str,
        result: Any,
        details: dict[str, Any],
        state: str,
    ) -> None:
        self.children = list(children)
        self.children_ended = {}  # a retried parent counts only this attempt's children
        self.child_results = {}
        self.on_child_failure = on_child_failure
        self.held = {"result": result, "details": details} if wait else None
        self.state = TaskState(state)

    class TaskAwaitingSignals(Aggregate.Event):
        attempt: int
        signals: list[str]
        result: Any  # the attempt's result, held until the signals come
        details: dict[str, Any]
        state: str  # "waiting"

    def await_signals(
        self, attempt: int, signals: list[str], result: Any, details: dict[str, Any]
    ) -> None:
        """The attempt succeeded, but its type needs ``signals`` before the task finishes."""
        self._require_current(attempt, "hold the result of")
        self._awaiting_signals(
            attempt=attempt, signals=signals, result=result, details=details, state="waiting"
        )

    @event(TaskAwaitingSignals)
    def _awaiting_signals(
        self, attempt: int, signals: list[str], result: Any, details: dict[str, Any], state: str
    ) -> None:
        self.awaited_signals = list(signals)
        self.held = {"result": result, "details": details}
        self.state = TaskState(state)
        self.lease_expires_at = None

    class TaskChildEnded(Aggregate.Event):
        child_id: UUID
        child_state: str
        result: Any
        state: str

    def child_ended(self, child_id: UUID, child_state: TaskState, result: Any) -> None:
        """One awaited child ended; the last one decides this task's outcome."""
        if self.state is not TaskState.WAITING or child_id not in self.children:
            return  # not waiting for it (ended, cancelled, or not awaited): nothing to record
        if child_id in self.children_ended:
            return
        self._child_ended(
            child_id=child_id, child_state=child_state.value, result=result, state="waiting"
        )
        if len(self.children_ended) < len(self.children):
            return
        bad = [c for c, s in self.children_ended.items() if s != TaskState.SUCCEEDED.value]
        if bad and self.on_child_failure == "fail":
            self._failed(
                attempt=self.attempts,
                error_class="ChildFailed",
                message=f"{len(bad)} of {len(self.children)} children did not succeed "
                f"(first: {bad[0]}, {self.children_ended[bad[0]]})",
                retryable=False,
                details={"children": {str(c): s for c, s in self.children_ended.items()}},
            )
            return
        held = self.held or {}
        self._succeeded(
            attempt=self.attempts,
            result={
                "result": held.get("result"),
                "children": [self.child_results.get(c) for c in self.children],
            },
            details=dict(held.get("details") or {}),
        )

    @event(TaskChildEnded)
    def _child_ended(self, child_id: UUID, child_state: str, result: Any, state: str) -> None:
        self.children_ended[child_id] = child_state
        self.child_results[child_id] = result

    # -- guards -------------------------------------------------------------------------

    def _require(self, allowed: set[TaskState] | frozenset[TaskState], action: str) -> None:
        if self.state not in allowed:
            raise InvalidTransition(f"cannot {action} task {self.id}: it is {self.state.value}")

    def _require_current(self, attempt: int, action: str) -> None:
        self._require({TaskState.RUNNING}, action)
        if attempt != self.attempts:
            raise InvalidTransition(
                f"cannot {action} attempt {attempt} of task {self.id}: "
                f"the current attempt is {self.attempts}"
            )


# Not yet started (held or not): a debounce may still move the start of a task in these.
DEBOUNCEABLE_STATES = frozenset(
    {TaskState.BLOCKED, TaskState.SCHEDULED, TaskState.READY, TaskState.WAITING}
)


def event_name(topic_or_class: str | type) -> str:
    """The short name of an event (``TaskStarted``) from its class or stored topic."""
    name = topic_or_class if isinstance(topic_or_class, str) else topic_or_class.__qualname__
    return name.rsplit(".", 1)[-1].rsplit(":", 1)[-1]


pin_topics(Task)  # the log's names for these classes (see stored_topics)

# The ``TaskEnqueued`` fields ``Task.__init__`` takes, in its order (``task_of_enqueued``).
_INIT_FIELDS = tuple(
    name for name in inspect.signature(Task.__init__).parameters if name not in ("self", "id")
)


def task_of_enqueued(enqueued: Task.TaskEnqueued) -> Task:
    """The task a ``TaskEnqueued`` creates: what ``enqueued.mutate(None)`` builds, without
    the library's filtering of the event's fields for each init method on every call (a
    third of folding a new task, as a worker does for each task it claims). A field an
    older stored event lacks reads as its class default, as the library's way gives it."""
    task = Task.__new__(Task)
    task.__base_init__(enqueued.originator_id, enqueued.originator_version, enqueued.timestamp)
    task.__init__(  # type: ignore[misc]
        id=enqueued.originator_id, **{name: getattr(enqueued, name) for name in _INIT_FIELDS}
    )
    enqueued.apply(task)
    return task
