"""Turning task requests (one task, or a DAG whose tasks name each other by ``ref``) into
new Task aggregates: validation against the registry, dependency resolution, cycle
detection, timeout resolution and lane rendering. Pure: the caller supplies ids, the clock
and the states of already-stored dependencies.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import jsonschema
from eventsourcing.utils import get_topic

from execution_ledger.domain.coalescing import Debounce, coalescing_of, refuse_conflicts
from execution_ledger.domain.durations import MAX_DURATION_SECONDS
from execution_ledger.domain.errors import (
    AdapterSettingsRefused,
    ConfigError,
    DependencyCycle,
    Forbidden,
    InvalidSubmission,
    SchemaViolation,
    TaskNotFound,
    UnknownDependency,
    UnknownTaskType,
)
from execution_ledger.domain.rate_limits import check_rate_limit_args, render_key
from execution_ledger.domain.registry import (
    NAME_PATTERN,
    PRIORITY_RANGE,
    AdapterCheck,
    Registry,
    Role,
    TaskType,
    matches_any,
)
from execution_ledger.domain.retry import MAX_ATTEMPTS, RetryPolicy
from execution_ledger.domain.storable import is_storable
from execution_ledger.domain.task import Task, TaskState
from execution_ledger.domain.timeouts import TimeoutOverrides, resolve_timeouts
from execution_ledger.domain.trace_context import from_fields

MAX_ARGS_BYTES = 256 * 1024
MAX_GRAPH_TASKS = 20_000


@dataclass(frozen=True)
class Requester:
    principal: str
    role: str


@dataclass(frozen=True)
class TaskRequest:
    """One task to enqueue. ``depends_on`` holds refs of the same submission or task ids."""

    type_name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    ref: str | None = None
    depends_on: tuple[str, ...] = ()
    run_at: datetime | None = None
    queue: str | None = None
    priority: int | None = None
    lane: str | None = None
    idempotency_key: str | None = None
    idempotency_period: float | None = None  # seconds the key stays taken; None: for ever
    tags: tuple[str, ...] = ()
    timeouts: TimeoutOverrides = field(default_factory=TimeoutOverrides)
    max_attempts: int | None = None
    adapter: str | None = None  # ad-hoc tasks only (roles with ``adhoc``)
    adapter_settings: Mapping[str, Any] | None = None
    # Dependencies whose results this task takes as inputs: True for all of them (named by
    # their ref, or id), a mapping input name -> ref or id, None for the type's default.
    inputs: bool | Mapping[str, str] | None = None
    # Coalescing (``domain/coalescing.py``): a singleton key or template (else the type's),
    # and a debounce (key or template, window, mode).
    singleton: str | None = None
    debounce: Debounce | None = None
    # The W3C trace context it is enqueued in (``traceparent``, ``tracestate``), stored with
    # it: set by the ways in (HTTP, NATS headers) and for children (the parent attempt's).
    trace: Mapping[str, str] | None = None


def external_dependencies(requests: Sequence[TaskRequest]) -> set[UUID]:
    """Ids of already-stored tasks that the requests depend on (refs excluded).

    Raises ``UnknownDependency`` for a name that is neither a ref here nor a task id.
    """
    refs = {r.ref for r in requests if r.ref is not None}
    ids: set[UUID] = set()
    for request in requests:
        for name in request.depends_on:
            if name in refs:
                continue
            try:
                ids.add(UUID(name))
            except ValueError:
                raise UnknownDependency(
                    f"{_label(request)} depends on {name!r}, which is neither a ref in this "
                    "submission nor a task id"
                ) from None
    return ids


def stored_states(
    requests: Sequence[TaskRequest], load: Callable[[UUID], Task]
) -> dict[UUID, TaskState]:
    """The states of the stored tasks the requests depend on, loaded with ``load``;
    ``UnknownDependency`` for an id with no task (``load`` raises ``TaskNotFound``)."""
    states = {}
    for task_id in external_dependencies(requests):
        try:
            states[task_id] = load(task_id).state
        except TaskNotFound:
            raise UnknownDependency(f"unknown dependency: no task {task_id}") from None
    return states


@dataclass(frozen=True)
class SubmissionContext:
    registry: Registry
    requester: Requester
    now: datetime
    new_id: Callable[[], UUID]
    adapter_check: AdapterCheck | None = None
    parent_id: UUID | None = None  # children spawned at run time: their parent
    depth: int = 0  # and their depth (the parent's + 1)


def plan_tasks(
    context: SubmissionContext,
    requests: Sequence[TaskRequest],
    stored_states: Mapping[UUID, TaskState],
    graph_id: UUID | None = None,
) -> list[Task]:
    """Validate ``requests`` as one atomic submission and return the new (unsaved) tasks,
    each after the tasks it depends on.

    ``stored_states`` must hold the state of every id from ``external_dependencies``.
    """
    if not requests:
        raise InvalidSubmission("nothing to enqueue: the submission has no tasks")
    if len(requests) > MAX_GRAPH_TASKS:
        raise InvalidSubmission(f"a submission holds at most {MAX_GRAPH_TASKS} tasks")
    ids_by_ref = _assign_ids(context, requests)
    missing = external_dependencies(requests) - set(stored_states)
    if missing:
        raise UnknownDependency(f"unknown dependency: no task {sorted(map(str, missing))[0]}")
    _refuse_cycles(requests)
    ids = list(ids_by_ref.values())
    shared = _Shared(context)
    return [
        _plan_one(context, requests[i], ids_by_ref, stored_states, graph_id, ids[i], shared)
        for i in _dependencies_first(requests)
    ]


class _Shared:
    """What the tasks of one submission share, worked out once rather than per task: the
    registered types, and the timeouts and retry policy each type and queue resolve to
    (every task gets its own copy of the dicts)."""

    def __init__(self, context: SubmissionContext) -> None:
        self.context = context
        self._types: dict[str, TaskType] = {}
        self._timeouts: dict[tuple[Any, ...], dict[str, float | None]] = {}
        self._retry: dict[RetryPolicy, dict[str, Any]] = {}

    def task_type(self, request: TaskRequest) -> TaskType:
        if request.adapter is not None:  # ad hoc: its own settings, checked each time
            return _resolve_type(self.context, request)
        task_type = self._types.get(request.type_name)
        if task_type is None:
            task_type = self._types[request.type_name] = _resolve_type(self.context, request)
        return task_type

    def timeouts(
        self, request: TaskRequest, task_type: TaskType, queue: str
    ) -> dict[str, float | None]:
        key = (request.timeouts, task_type.timeouts, queue)
        resolved = self._timeouts.get(key)
        if resolved is None:
            registry = self.context.registry
            resolved = self._timeouts[key] = resolve_timeouts(
                request.timeouts,
                task_type.timeouts,
                registry.queue(queue).timeouts,
                default=registry.default_timeouts,
            ).as_dict()
        return dict(resolved)

    def retry(self, policy: RetryPolicy) -> dict[str, Any]:
        data = self._retry.get(policy)
        if data is None:
            data = self._retry[policy] = policy.as_dict()
        return {**data, "non_retryable": list(data["non_retryable"])}


def _dependencies_first(requests: Sequence[TaskRequest]) -> list[int]:
    """Indexes of ``requests`` with every task after the tasks it depends on (stable:
    an already ordered submission keeps its order). Assumes no cycle."""
    index_by_ref = {r.ref: i for i, r in enumerate(requests) if r.ref is not None}
    order: list[int] = []
    placed: set[int] = set()
    for first in range(len(requests)):
        stack = [(first, False)]
        while stack:
            index, expanded = stack.pop()
            if index in placed:
                continue
            if expanded:
                placed.add(index)
                order.append(index)
                continue
            stack.append((index, True))
            for dep in reversed(requests[index].depends_on):
                if dep in index_by_ref and index_by_ref[dep] not in placed:
                    stack.append((index_by_ref[dep], False))
    return order


def _assign_ids(context: SubmissionContext, requests: Sequence[TaskRequest]) -> dict[str, UUID]:
    ids: dict[str, UUID] = {}
    for index, request in enumerate(requests):
        key = request.ref if request.ref is not None else f"#{index}"
        if request.ref is not None and (not request.ref or request.ref.startswith("#")):
            raise InvalidSubmission(f"invalid ref {request.ref!r}")
        if key in ids:
            raise InvalidSubmission(f"ref {key!r} is used twice in this submission")
        ids[key] = context.new_id()
    return ids


def _refuse_cycles(requests: Sequence[TaskRequest]) -> None:
    """Depth-first search over refs; names the cycle it finds."""
    edges = {r.ref: [d for d in r.depends_on] for r in requests if r.ref is not None}
    done: set[str] = set()
    for start in edges:
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                path.append(node)
                on_path.add(node)
            children = [c for c in edges.get(node, []) if c in edges]
            if index < len(children):
                stack.append((node, index + 1))
                child = children[index]
                if child in on_path:
                    cycle = [*path[path.index(child) :], child]
                    raise DependencyCycle("dependency cycle: " + " -> ".join(cycle))
                if child not in done:
                    stack.append((child, 0))
            else:
                path.pop()
                on_path.discard(node)
                done.add(node)


def _plan_one(
    context: SubmissionContext,
    request: TaskRequest,
    ids_by_ref: Mapping[str, UUID],
    stored_states: Mapping[UUID, TaskState],
    graph_id: UUID | None,
    task_id: UUID,
    shared: _Shared,
) -> Task:
    registry = context.registry
    _check_fields(request)
    task_type = shared.task_type(request)
    args = _checked_args(request, task_type)
    coalescing = coalescing_of(
        request.singleton,
        request.debounce,
        task_type.singleton if context.parent_id is None else None,  # children: none
        args,
        context.now,
    )
    run_at = coalescing.run_at or request.run_at
    depends_on = [ids_by_ref[d] if d in ids_by_ref else UUID(d) for d in request.depends_on]
    if len(set(depends_on)) != len(depends_on):
        raise InvalidSubmission(f"{_label(request)} names the same dependency twice")
    waits = any(
        d not in stored_states or stored_states[d] is not TaskState.SUCCEEDED for d in depends_on
    )
    due = run_at is None or run_at <= context.now
    state = TaskState.BLOCKED if waits else TaskState.READY if due else TaskState.SCHEDULED
    queue = request.queue or task_type.queue
    if queue not in registry.queues:
        known = ", ".join(sorted(registry.queues))
        raise InvalidSubmission(f"{_label(request)}: unknown queue {queue!r} (known: {known})")
    timeouts = shared.timeouts(request, task_type, queue)
    check_rate_limit_args(registry.rate_limits, task_type.name, queue, args)
    if task_type.signals and state is not TaskState.BLOCKED:
        state = TaskState.WAITING
    retry = shared.retry(task_type.retry)
    if request.max_attempts is not None:
        if not 1 <= request.max_attempts <= MAX_ATTEMPTS:
            raise InvalidSubmission(f"max_attempts must be from 1 to {MAX_ATTEMPTS}")
        retry["max_attempts"] = request.max_attempts
    return enqueued_task(
        task_id,
        type_name=task_type.name,
        adapter=task_type.adapter,
        args=args,
        queue=queue,
        priority=request.priority if request.priority is not None else task_type.priority,
        depends_on=depends_on,
        run_at=run_at,
        lane=request.lane or render_lane(task_type.lane, args),
        idempotency_key=request.idempotency_key,
        principal=context.requester.principal,
        role=context.requester.role,
        tags=list(request.tags) or list(task_type.tags),
        timeouts=timeouts,
        retry=retry,
        initial_state=state.value,
        graph_id=graph_id,
        ref=request.ref,
        adapter_settings=dict(request.adapter_settings or {}) if request.adapter else None,
        inputs=_inputs(request, task_type, dict(zip(request.depends_on, depends_on, strict=True))),
        parent_id=context.parent_id,
        depth=context.depth,
        signals=list(task_type.signals) or None,
        singleton_key=coalescing.singleton_key,
        debounce_key=coalescing.debounce_key,
        fair_key=fair_key_of(registry.queue(queue).fair_key, args),
        registry_version=context.registry.version,
        trace=stored_trace(request.trace),
    )


_TASK_TOPIC = get_topic(Task)
_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(Task.TaskEnqueued))
_GIVEN_FIELDS = frozenset(_EVENT_FIELDS) - {
    "originator_topic",
    "originator_id",
    "originator_version",
    "timestamp",
}


def enqueued_task(task_id: UUID, **fields: Any) -> Task:
    """The new task ``Task(id=task_id, **fields)`` makes, with the same pending
    ``TaskEnqueued``, built directly: the library's way binds the arguments to the signature
    and filters them again for ``__init__`` (about half the cost of planning a task).
    ``fields`` are ``Task.__init__``'s keyword arguments."""
    timestamp = Task.TaskEnqueued.create_timestamp()
    event = _enqueued_event(task_id, timestamp, fields)
    task = Task.__new__(Task)
    task.__base_init__(task_id, Task.INITIAL_VERSION, timestamp)
    task.__init__(id=task_id, **fields)  # type: ignore[misc]
    task.pending_events.append(event)
    return task


def _enqueued_event(
    task_id: UUID, timestamp: datetime, fields: dict[str, Any]
) -> Task.TaskEnqueued:
    """The ``TaskEnqueued`` its constructor makes. With every field given (as planning
    gives them) its attributes are set in field order directly, as the frozen dataclass's
    ``__init__`` sets them one ``object.__setattr__`` at a time (the stored JSON keeps that
    order); its one check, a UUID id, is made here."""
    values = {
        "originator_topic": _TASK_TOPIC,
        "originator_id": task_id,
        "originator_version": Task.INITIAL_VERSION,
        "timestamp": timestamp,
        **fields,
    }
    if not isinstance(task_id, UUID) or fields.keys() != _GIVEN_FIELDS:
        return Task.TaskEnqueued(**values)
    event = object.__new__(Task.TaskEnqueued)
    event.__dict__.update({name: values[name] for name in _EVENT_FIELDS})
    return event


def _inputs(
    request: TaskRequest, task_type: TaskType, deps: Mapping[str, UUID]
) -> dict[str, UUID] | None:
    """Input name -> dependency id, for the dependencies whose results the task takes."""
    wanted = request.inputs if request.inputs is not None else task_type.inputs
    if wanted is False or wanted is None:
        return None
    if wanted is True:
        return dict(deps) or None
    if not isinstance(wanted, Mapping) or not wanted:
        raise InvalidSubmission(
            f"{_label(request)}: inputs must be true, false or an object of input name -> ref"
        )
    chosen: dict[str, UUID] = {}
    for name, dep in wanted.items():
        if not isinstance(name, str) or not _INPUT_NAME.fullmatch(name):
            raise InvalidSubmission(f"{_label(request)}: {name!r} is not a valid input name")
        if not isinstance(dep, str) or dep not in deps:
            raise InvalidSubmission(
                f"{_label(request)}: input {name!r} names {dep!r}, which is not in depends_on"
            )
        chosen[name] = deps[dep]
    return chosen


_INPUT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}")


def _check_fields(request: TaskRequest) -> None:
    """Refuse values of the wrong type before they reach the log (and the read models)."""
    label = _label(request)
    texts = [request.lane, request.idempotency_key, request.ref, *request.tags, *request.depends_on]
    if not all(is_storable(t) for t in texts if isinstance(t, str)):
        raise InvalidSubmission(f"{label}: a text field holds a NUL character or a lone surrogate")
    if not isinstance(request.type_name, str) or not NAME_PATTERN.fullmatch(request.type_name):
        raise InvalidSubmission(f"{label}: type must be a task type name")
    if request.priority is not None and (
        not isinstance(request.priority, int)
        or isinstance(request.priority, bool)
        or not PRIORITY_RANGE[0] <= request.priority <= PRIORITY_RANGE[1]
    ):
        low, high = PRIORITY_RANGE
        raise InvalidSubmission(f"{label}: priority must be an integer from {low} to {high}")
    for key, value in (
        ("queue", request.queue),
        ("lane", request.lane),
        ("idempotency_key", request.idempotency_key),
        ("ref", request.ref),
    ):
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 200):
            raise InvalidSubmission(f"{label}: {key} must be a string of 1 to 200 characters")
    period = request.idempotency_period
    if period is not None and (
        request.idempotency_key is None
        or not isinstance(period, (int, float))
        or isinstance(period, bool)
        or not 0 < period < float("inf")
    ):
        raise InvalidSubmission(
            f"{label}: idempotency_period must be a positive number of seconds, with a key"
        )
    if request.queue is not None and not NAME_PATTERN.fullmatch(request.queue):
        raise InvalidSubmission(f"{label}: {request.queue!r} is not a valid queue name")
    if not all(isinstance(t, str) and 0 < len(t) <= 100 for t in request.tags):
        raise InvalidSubmission(f"{label}: tags must be strings of 1 to 100 characters")
    if not all(isinstance(d, str) for d in request.depends_on):
        raise InvalidSubmission(f"{label}: depends_on must hold refs or task ids (strings)")
    for kind, seconds in vars(request.timeouts).items():
        if seconds is not None and not (0 < seconds <= MAX_DURATION_SECONDS):
            raise InvalidSubmission(f"{label}: timeouts.{kind} must be from 0 to a year")
    period = request.idempotency_period
    if period is not None and period > MAX_DURATION_SECONDS:
        raise InvalidSubmission(f"{label}: idempotency_period may be at most a year")
    if request.run_at is not None and (
        not isinstance(request.run_at, datetime) or request.run_at.tzinfo is None
    ):
        raise InvalidSubmission(f"{label}: run_at must be a time with a time zone")
    refuse_conflicts(request.debounce, request.idempotency_key, request.run_at)


def _resolve_type(context: SubmissionContext, request: TaskRequest) -> TaskType:
    role = context.registry.roles.get(context.requester.role)
    if role is None:
        raise Forbidden(f"unknown role {context.requester.role!r}")
    if request.adapter is not None:
        return _adhoc_type(context, request, role)
    task_type = context.registry.task_type(request.type_name)
    if task_type is None:
        known = ", ".join(sorted(context.registry.task_types)) or "none"
        raise UnknownTaskType(f"unknown task type {request.type_name!r} (known: {known})")
    if role.name not in task_type.roles or not role.may_enqueue(task_type):
        raise Forbidden(f"role {role.name!r} may not enqueue {task_type.name!r}")
    return task_type


def _adhoc_type(context: SubmissionContext, request: TaskRequest, role: Role) -> TaskType:
    assert request.adapter is not None
    if not role.adhoc:
        raise Forbidden(f"role {role.name!r} may not enqueue ad-hoc tasks")
    if not matches_any(request.adapter, role.adapters):
        raise Forbidden(f"role {role.name!r} may not use the {request.adapter!r} adapter")
    settings = dict(request.adapter_settings or {})
    if context.adapter_check is not None:
        try:
            context.adapter_check(request.adapter, settings, ("adapter_settings",))
        except ConfigError as error:
            where = ".".join(error.where) or "adapter_settings"
            raise AdapterSettingsRefused(f"{_label(request)}: {where}: {error.reason}") from None
    registry = context.registry
    adhoc_type = TaskType(
        name=request.type_name,
        adapter=request.adapter,
        settings=settings,
        queue=registry.default_queue,
        priority=0,
        timeouts=TimeoutOverrides(),
        retry=registry.default_retry,
        roles=(role.name,),
        schema=None,
    )
    if not role.may_enqueue(adhoc_type):
        raise Forbidden(f"role {role.name!r} may not enqueue {adhoc_type.name!r}")
    return adhoc_type


def _checked_args(request: TaskRequest, task_type: TaskType) -> dict[str, Any]:
    if not isinstance(request.args, Mapping):
        raise SchemaViolation(f"{_label(request)}: args must be a JSON object")
    args = dict(request.args)
    try:
        text = json.dumps(args, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise SchemaViolation(f"{_label(request)}: args are not JSON: {error}") from None
    if not is_storable(text):
        raise SchemaViolation(f"{_label(request)}: args hold a NUL character or a lone surrogate")
    size = len(text)
    if size > MAX_ARGS_BYTES:
        raise InvalidSubmission(
            f"{_label(request)}: args are {size} bytes, more than the {MAX_ARGS_BYTES} allowed"
        )
    if task_type.schema is not None:
        mismatch = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(task_type.schema).iter_errors(args)
        )
        if mismatch is not None:
            where = "/".join(str(p) for p in mismatch.absolute_path) or "(root)"
            raise SchemaViolation(
                f"{_label(request)}: args do not match the schema of {task_type.name!r} "
                f"at {where}: {mismatch.message}"
            )
    return args


_LANE_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fair_key_of(template: str | None, args: Mapping[str, Any]) -> str | None:
    """The key a fair queue gives a task its turn by: ``""`` (the keyless group) when the
    args lack one of its fields; None in a queue without a ``fair_key``."""
    if template is None:
        return None
    return render_key(template, args) or ""


def render_lane(template: str | None, args: Mapping[str, Any]) -> str | None:
    """Fill a lane template such as ``agent:{agent_id}`` from the args."""
    if template is None:
        return None

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in args:
            raise SchemaViolation(f"the lane template {template!r} needs the argument {name!r}")
        return str(args[name])

    return _LANE_FIELD.sub(fill, template)


def _label(request: TaskRequest) -> str:
    return f"task {request.ref!r}" if request.ref else f"task of type {request.type_name!r}"


def stored_trace(trace: object) -> dict[str, str] | None:
    """A request's trace context as its task stores it: checked and in canonical form, or
    None (an invalid one is dropped, never refused: the Python API may pass any)."""
    if not trace or not isinstance(trace, Mapping):
        return None
    context = from_fields(trace)
    return context.fields() if context is not None else None
