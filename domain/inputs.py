"""A task's inputs: its dependencies' results, resolved when an attempt is claimed.

A task whose ``TaskEnqueued`` names ``inputs`` (input name -> dependency id) is handed, by
name, each dependency's result as its ``TaskSucceeded`` stored it: ``{"result": ...,
"task_id": "..."}``. Resolved from the dependencies folded from the log, never from a read
model. A dependency that has no result (not succeeded: retried by hand meanwhile, or the
task was enqueued against a dependency that had not succeeded) fails the attempt with
``InputMissing``; inputs whose JSON is larger than ``[defaults.workflows]
max_input_bytes`` fail it with ``InputTooLarge``. Neither is retried: running it again
would meet the same inputs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from execution_ledger.domain.execution import Failure
from execution_ledger.domain.task import Task, TaskState


def resolve_inputs(
    inputs: Mapping[str, UUID], dependencies: Mapping[UUID, Task], max_bytes: int
) -> tuple[dict[str, Any] | None, Failure | None]:
    """The inputs by name, or the failure that ends the attempt instead."""
    resolved: dict[str, Any] = {}
    for name, dep_id in inputs.items():
        dep = dependencies.get(dep_id)
        if dep is None or dep.state is not TaskState.SUCCEEDED:
            state = "unknown" if dep is None else dep.state.value
            return None, Failure(
                "InputMissing",
                f"input {name!r}: task {dep_id} has no result (it is {state})",
                retryable=False,
                details={"input": name, "task_id": str(dep_id)},
            )
        resolved[name] = {"result": dep.result, "task_id": str(dep_id)}
    size = len(json.dumps(resolved, separators=(",", ":"), ensure_ascii=False))
    if size > max_bytes:
        return None, Failure(
            "InputTooLarge",
            f"the inputs are {size} bytes of JSON, more than the {max_bytes} allowed",
            retryable=False,
            details={"input_bytes": size, "max_input_bytes": max_bytes},
        )
    return resolved, None
