"""Turning task requests (one task, or a DAG whose tasks name each other by ``ref``) into
new Task aggregates: validation against the registry, dependency resolution, cycle
detection, timeout resolution and lane rendering. Pure: the caller supplies ids, the clock
and the states of already-stored dependencies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import jsonschema

from domain.errors import (
    DependencyCycle,
    Forbidden,
    InvalidSubmission,
    SchemaViolation,
    UnknownDependency,
    UnknownTaskType,
)
from domain.registry import AdapterCheck, Registry, TaskType
from domain.task import Task, TaskState
from domain.timeouts import TimeoutOverrides, resolve_timeouts

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
    tags: tuple[str, ...] = ()
    timeouts: TimeoutOverrides = TimeoutOverrides()
    max_attempts: int | None = None
    adapter: str | None = None  # ad-hoc tasks only (roles with ``adhoc``)
    adapter_settings: Mapping[str, Any] | None = None


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


@dataclass(frozen=True)
class SubmissionContext:
    registry: Registry
    requester: Requester
    now: datetime
    new_id: Callable[[], UUID]
    adapter_check: AdapterCheck | None = None


def plan_tasks(
    context: SubmissionContext,
    requests: Sequence[TaskRequest],
    stored_states: Mapping[UUID, TaskState],
    graph_id: UUID | None = None,
) -> list[Task]:
    """Validate ``requests`` as one atomic submission and return the new (unsaved) tasks.

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
    return [
        _plan_one(context, request, ids_by_ref, stored_states, graph_id, task_id)
        for request, task_id in zip(requests, ids_by_ref.values(), strict=True)
    ]


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
                    cycle = path[path.index(child):] + [child]
                    raise DependencyCycle("dependency cycle: " + " -> ".join(cycle))
                if child not in done:
                    stack.append((child, 0))
            else:
                path.pop()
                on_path.discard(node)
                done.add(node)


def _plan_one(  # noqa: PLR0913
    context: SubmissionContext,
    request: TaskRequest,
    ids_by_ref: Mapping[str, UUID],
    stored_states: Mapping[UUID, TaskState],
    graph_id: UUID | None,
    task_id: UUID,
) -> Task:
    registry = context.registry
    task_type = _resolve_type(context, request)
    args = _checked_args(request, task_type)
    depends_on = [ids_by_ref[d] if d in ids_by_ref else UUID(d) for d in request.depends_on]
    if len(set(depends_on)) != len(depends_on):
        raise InvalidSubmission(f"{_label(request)} names the same dependency twice")
    waits = any(
        d not in stored_states or stored_states[d] is not TaskState.SUCCEEDED for d in depends_on
    )
    due = request.run_at is None or request.run_at <= context.now
    state = TaskState.BLOCKED if waits else TaskState.READY if due else TaskState.SCHEDULED
    queue = request.queue or task_type.queue
    timeouts = resolve_timeouts(
        request.timeouts,
        task_type.timeouts,
        registry.queue(queue).timeouts,
        default=registry.default_timeouts,
    )
    retry = task_type.retry.as_dict()
    if request.max_attempts is not None:
        if request.max_attempts < 1:
            raise InvalidSubmission("max_attempts must be at least 1")
        retry["max_attempts"] = request.max_attempts
    return Task(
        id=task_id,
        type_name=task_type.name,
        adapter=task_type.adapter,
        args=args,
        queue=queue,
        priority=request.priority if request.priority is not None else task_type.priority,
        depends_on=depends_on,
        run_at=request.run_at,
        lane=request.lane or render_lane(task_type.lane, args),
        idempotency_key=request.idempotency_key,
        principal=context.requester.principal,
        role=context.requester.role,
        tags=list(request.tags) or list(task_type.tags),
        timeouts=timeouts.as_dict(),
        retry=retry,
        initial_state=state.value,
        graph_id=graph_id,
        ref=request.ref,
        adapter_settings=dict(request.adapter_settings) if request.adapter else None,
    )


def _resolve_type(context: SubmissionContext, request: TaskRequest) -> TaskType:
    role = context.registry.roles.get(context.requester.role)
    if role is None:
        raise Forbidden(f"unknown role {context.requester.role!r}")
    if request.adapter is not None:
        return _adhoc_type(context, request, role.adhoc)
    task_type = context.registry.task_type(request.type_name)
    if task_type is None:
        known = ", ".join(sorted(context.registry.task_types)) or "none"
        raise UnknownTaskType(f"unknown task type {request.type_name!r} (known: {known})")
    if role.name not in task_type.roles or not role.may_enqueue(task_type):
        raise Forbidden(f"role {role.name!r} may not enqueue {task_type.name!r}")
    return task_type


def _adhoc_type(context: SubmissionContext, request: TaskRequest, allowed: bool) -> TaskType:
    if not allowed:
        raise Forbidden(f"role {context.requester.role!r} may not enqueue ad-hoc tasks")
    assert request.adapter is not None
    settings = dict(request.adapter_settings or {})
    if context.adapter_check is not None:
        context.adapter_check(request.adapter, settings, ("adapter_settings",))
    registry = context.registry
    return TaskType(
        name=request.type_name,
        adapter=request.adapter,
        settings=settings,
        queue=registry.default_queue,
        priority=0,
        timeouts=TimeoutOverrides(),
        retry=registry.default_retry,
        roles=(context.requester.role,),
        schema=None,
    )


def _checked_args(request: TaskRequest, task_type: TaskType) -> dict[str, Any]:
    if not isinstance(request.args, Mapping):
        raise SchemaViolation(f"{_label(request)}: args must be a JSON object")
    args = dict(request.args)
    try:
        size = len(json.dumps(args, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise SchemaViolation(f"{_label(request)}: args are not JSON: {error}") from None
    if size > MAX_ARGS_BYTES:
        raise InvalidSubmission(
            f"{_label(request)}: args are {size} bytes, more than the {MAX_ARGS_BYTES} allowed"
        )
    if task_type.schema is not None:
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(task_type.schema).iter_errors(args)
        )
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise SchemaViolation(
                f"{_label(request)}: args do not match the schema of {task_type.name!r} "
                f"at {where}: {error.message}"
            )
    return args


_LANE_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
