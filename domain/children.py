"""Children spawned at run time, and the fan-in that decides a waiting parent.

An attempt spawns children in one of two ways: a python callable through its context
(``Success.spawn``), or any adapter through its result's shape::

    {"children": [{"type": "square", "args": {"n": 3}}, ...], "wait": true,
     "on_child_failure": "fail"}

(the result itself, e.g. a Lua table or a NATS reply; or its ``json`` member: a shell or
docker command's stdout as JSON; or its ``body`` member: an HTTP response's JSON body).
Each child is a submission like any other (``plan_tasks``: the type's schema, the roles of
the parent's requester, queues, limits), plus the workflow limits (children per attempt,
depth). The children carry the parent's id and depth.

When a child ends (succeeded, failed for good, cancelled, skipped, timed out), the same
transaction appends ``TaskChildEnded`` to its waiting parent (``notify_parents``); the last
one decides the parent (``Task.child_ended``). Two children ending at once write the same
parent, so one of them meets a version conflict and is recorded again: none is lost.
Pure: the caller supplies the registry, clock and ids, and saves what comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from execution_ledger.domain.errors import InvalidSubmission, LedgerError
from execution_ledger.domain.execution import ExecutionResult, Spawn, Success
from execution_ledger.domain.graph_json import task_requests
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.submission import Requester, SubmissionContext, TaskRequest, plan_tasks
from execution_ledger.domain.task import Task, TaskState
from execution_ledger.domain.trace_context import attempt_fields

ON_CHILD_FAILURE = ("fail", "ignore")
def spawn_of(success: Success) -> Spawn | None:
    """The children an attempt's success asks for, or None. Raises ``InvalidSubmission``
    when the result has a ``children`` member of the wrong shape."""
    if success.spawn is not None:
        return success.spawn
    result = success.result
    if isinstance(result, dict) and "children" not in result:
        inner = result.get("json", result.get("body"))
        result = inner if isinstance(inner, dict) else result
    if not isinstance(result, dict) or "children" not in result:
        return None
    children = result["children"]
    if not isinstance(children, list) or not all(isinstance(c, dict) for c in children):
        raise InvalidSubmission("children must be an array of task objects")
    wait = result.get("wait", False)
    policy = result.get("on_child_failure", "fail")
    if not isinstance(wait, bool):
        raise InvalidSubmission("wait must be true or false")
    if policy not in ON_CHILD_FAILURE:
        raise InvalidSubmission(f"on_child_failure must be one of {', '.join(ON_CHILD_FAILURE)}")
    return Spawn(tuple(children), wait, policy)


def child_requests(children: Iterable[Mapping[str, Any]]) -> list[TaskRequest]:
    """Task requests from the children's JSON objects (refs and depends_on among siblings)."""
    return task_requests(children, "children")


def plan_children(
    registry: Registry,
    parent: Task,
    spawn: Spawn,
    now: datetime,
    new_id: Callable[[], UUID],
) -> list[Task]:
    """The children as new tasks, checked as the parent's requester would submit them.
    Raises a ``LedgerError`` (``InvalidSubmission``, ``Forbidden``, ...) if any is refused."""
    limits = registry.workflows
    if len(spawn.children) > limits.max_children:
        raise InvalidSubmission(
            f"{len(spawn.children)} children, more than the {limits.max_children} allowed"
        )
    if parent.depth + 1 > limits.max_depth:
        raise InvalidSubmission(
            f"a child would be at depth {parent.depth + 1}, deeper than the "
            f"{limits.max_depth} allowed"
        )
    if not spawn.children:
        return []
    context = SubmissionContext(
        registry=registry,
        requester=Requester(parent.principal, parent.role),
        now=now,
        new_id=new_id,
        parent_id=parent.id,
        depth=parent.depth + 1,
    )
    requests = child_requests(spawn.children)
    trace = attempt_fields(parent.trace, parent.id, parent.attempts)
    if trace is not None:  # the parent attempt's trace context goes on in its children
        requests = [replace(request, trace=trace) for request in requests]
    # Children may depend on siblings (refs) only: no stored task is known to them.
    return plan_tasks(context, requests, {}, graph_id=parent.graph_id)


def spawned_children(
    registry: Registry,
    task: Task,
    attempt: int,
    result: ExecutionResult,
    now: datetime,
    new_id: Callable[[], UUID],
) -> list[Task] | None:
    """The children an attempt's success spawns, new and unsaved, the parent's
    ``TaskChildrenSpawned`` (and ``TaskSucceeded`` when it does not wait) pending. Refused
    children fail the parent (``ChildrenRefused``, not retried) and none is returned. A
    success that spawns none but whose type has ``signals_to_finish`` is held for them
    (``TaskAwaitingSignals``; ``[]``). None: a plain success, for the caller to record."""
    if not isinstance(result, Success):
        return None
    try:
        spawn = spawn_of(result)
        if spawn is None:
            return _held_for_signals(registry, task, attempt, result)
        children = plan_children(registry, task, spawn, now, new_id)
    except LedgerError as error:
        task.fail(attempt, "ChildrenRefused", str(error), retryable=False)
        return []
    task.spawn_children(
        attempt,
        [child.id for child in children],
        spawn.wait,
        spawn.on_child_failure,
        result.result,
        result.details,
    )
    return children


def _held_for_signals(
    registry: Registry, task: Task, attempt: int, result: Success
) -> list[Task] | None:
    """A success of a type with ``signals_to_finish`` waits for them (``TaskAwaitingSignals``,
    no child); None for any other success (recorded as it is)."""
    task_type = registry.task_type(task.type_name)
    if task_type is None or not task_type.signals_to_finish:
        return None
    task.await_signals(attempt, list(task_type.signals_to_finish), result.result, result.details)
    return []


def notify_parents(
    ended: Iterable[Task], load: Callable[[list[UUID]], Mapping[UUID, Task]]
) -> list[Task]:
    """``TaskChildEnded`` (and the parent's outcome when it was the last) for every ended
    child of a waiting parent, up the tree as long as a parent ends too; returns the
    parents with new events, to save with them."""
    changed: dict[UUID, Task] = {}
    frontier = [  # (parent id, ended child)
        (t.parent_id, t) for t in ended if t.parent_id is not None and t.state.is_terminal
    ]
    while frontier:
        wanted = sorted({parent_id for parent_id, _ in frontier if parent_id not in changed})
        parents = {**dict(load(wanted)), **changed}
        decided: list[tuple[UUID, Task]] = []
        for parent_id, child in frontier:
            parent = parents.get(parent_id)
            if parent is None or parent.state is not TaskState.WAITING:
                continue
            result = child.result if child.state is TaskState.SUCCEEDED else None
            parent.child_ended(child.id, child.state, result)
            if parent.pending_events:
                changed[parent.id] = parent
            if parent.state.is_terminal and parent.parent_id is not None:
                decided.append((parent.parent_id, parent))
        frontier = decided
    return list(changed.values())
