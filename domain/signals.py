"""Who may deliver which signal to which task: the rule a signal passes before its event.

A task type lists the signals it needs before it runs (``signals = ["approval"]``); a
signal is delivered by a principal whose role's ``signals`` globs match its name, with
JSON data of at most ``MAX_SIGNAL_BYTES``; with ``signal_by_other = true`` on the type,
the principal that enqueued the task may not deliver its signals (the coder may not
approve their own work).
"""

from __future__ import annotations

import json
from typing import Any

from execution_ledger.domain.errors import Forbidden, InvalidSubmission
from execution_ledger.domain.registry import NAME_PATTERN, Registry
from execution_ledger.domain.storable import is_storable
from execution_ledger.domain.submission import Requester
from execution_ledger.domain.task import Task

MAX_SIGNAL_BYTES = 64 * 1024


def check_signal(registry: Registry, requester: Requester, name: Any, data: Any) -> None:
    """Refuse a malformed signal, or one the requester's role may not deliver."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidSubmission(f"{name!r} is not a valid signal name")
    try:
        text = json.dumps(data, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise InvalidSubmission(f"the signal's data is not JSON: {error}") from None
    if not is_storable(text):
        raise InvalidSubmission("the signal's data holds a NUL character or a lone surrogate")
    size = len(text)
    if size > MAX_SIGNAL_BYTES:
        raise InvalidSubmission(
            f"the signal's data is {size} bytes, more than the {MAX_SIGNAL_BYTES} allowed"
        )
    role = registry.roles.get(requester.role)
    if role is None or not role.may_signal(name):
        raise Forbidden(f"role {requester.role!r} may not deliver the signal {name!r}")


def check_signaller(registry: Registry, requester: Requester, task: Task) -> None:
    """Refuse the task's own requester when its type wants the signal from someone else."""
    task_type = registry.task_type(task.type_name)
    if (
        task_type is not None
        and task_type.signal_by_other
        and requester.principal == task.principal
    ):
        raise Forbidden(
            f"{requester.principal!r} enqueued task {task.id} and may not deliver its signals"
        )
