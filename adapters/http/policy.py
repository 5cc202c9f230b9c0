"""What a role may do to tasks and queues beyond enqueueing (which the domain checks itself).

- read: every authenticated role (the registry has no read policy yet);
- cancel: roles with ``may_cancel`` whose ``task_types`` and ``adapters`` patterns match the task;
- retry: roles that may enqueue the task's type (or, for an ad-hoc task, enqueue ad-hoc tasks);
- bulk actions: each kind of task among the matches as above (cancel as cancel; retry,
  re-prioritise and move as retry);
- pause and resume queues: the ``admin`` role only;
- ad-hoc tasks (an adapter named in the body): refused over HTTP while no principals are
  configured (every caller would be the local admin), unless ``[http]
  allow_adhoc_without_principals = true``.
"""

from __future__ import annotations

from typing import Protocol

from execution_ledger.domain.errors import Forbidden
from execution_ledger.domain.registry import Registry, Role, matches_any
from execution_ledger.domain.submission import Requester, TaskRequest

QUEUE_CONTROL_ROLES = frozenset({"admin"})


class TaskKind(Protocol):
    """What the cancel and retry rules read of a task: a ``Task``, or a kind of task (type
    and adapter) among the matches of a bulk action."""

    @property
    def type_name(self) -> str: ...

    @property
    def adapter(self) -> str: ...


def role_of(registry: Registry, requester: Requester) -> Role:
    role = registry.roles.get(requester.role)
    if role is None:
        raise Forbidden(f"unknown role {requester.role!r}")
    return role


def _covers(role: Role, task: TaskKind) -> bool:
    return matches_any(task.type_name, role.task_types) and matches_any(task.adapter, role.adapters)


def check_cancel(registry: Registry, requester: Requester, task: TaskKind) -> None:
    role = role_of(registry, requester)
    if not role.may_cancel:
        raise Forbidden(f"role {role.name!r} may not cancel tasks")
    if not _covers(role, task):
        raise Forbidden(f"role {role.name!r} may not cancel tasks of type {task.type_name!r}")


def check_retry(registry: Registry, requester: Requester, task: TaskKind) -> None:
    _check_may_enqueue(registry, role_of(registry, requester), task, "retry")


def check_bulk(registry: Registry, requester: Requester, action: str, task: TaskKind) -> None:
    """A bulk action on tasks of this kind: cancel as one cancel; retry, reprioritise and
    move need a role that may enqueue the type (as a retry does)."""
    if action == "cancel":
        check_cancel(registry, requester, task)
    else:
        _check_may_enqueue(registry, role_of(registry, requester), task, action)


def _check_may_enqueue(registry: Registry, role: Role, task: TaskKind, action: str) -> None:
    task_type = registry.task_type(task.type_name)
    if task_type is None or task_type.adapter != task.adapter:
        allowed = role.adhoc and matches_any(task.adapter, role.adapters)
    else:
        allowed = role.name in task_type.roles and role.may_enqueue(task_type)
    if not allowed:
        raise Forbidden(f"role {role.name!r} may not {action} tasks of type {task.type_name!r}")


def check_queue_control(registry: Registry, requester: Requester, what: str = "queues") -> None:
    role = role_of(registry, requester)
    if role.name not in QUEUE_CONTROL_ROLES:
        raise Forbidden(f"role {role.name!r} may not pause or resume {what}")


def check_adhoc_without_principals(
    registry: Registry, allowed: bool, request: TaskRequest
) -> None:
    """Refuse an ad-hoc task when no principals are configured, unless ``allowed``."""
    adhoc = request.adapter is not None or request.adapter_settings is not None
    if adhoc and not registry.principals and not allowed:
        raise Forbidden(
            "ad-hoc tasks (adapter and adapter_settings in the body) are refused over HTTP "
            "while no principals are configured, since every caller acts as the local admin; "
            "configure [[principals]] with tokens, or set [http] "
            "allow_adhoc_without_principals = true to accept them from anyone who can reach "
            "this server"
        )
