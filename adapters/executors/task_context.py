"""What a python callable that takes a second parameter is given: its ``TaskContext``.

    def step(args, context):
        previous = context.inputs["previous"]["result"]   # a dependency's result
        context.progress(0.5, "half way")                  # a TaskHeartbeat (coalesced)
        context.spawn("square", {"n": 3})                  # a child, enqueued as it ends
        context.wait_for_children(on_child_failure="ignore")
        return {"seen": previous}

Children are enqueued when the attempt ends well (with its ``TaskChildrenSpawned``), checked
like any submission by the parent's requester (``domain/children.py``); an attempt that
fails enqueues none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from execution_ledger.domain.children import ON_CHILD_FAILURE
from execution_ledger.domain.execution import Execution, Spawn


class TaskContext:
    def __init__(self, execution: Execution) -> None:
        self.task_id: UUID = execution.task_id
        self.attempt: int = execution.attempt
        self.inputs: Mapping[str, Any] = execution.inputs or {}
        # The attempt's W3C trace context ({"traceparent", "tracestate"}), or empty.
        self.trace: Mapping[str, str] = execution.trace or {}
        self._report = execution.progress
        self._children: list[dict[str, Any]] = []
        self._wait = False
        self._policy = "fail"

    def progress(self, fraction: float | None, message: str | None = None) -> None:
        """Report how far the task is (0..1, or None for "still alive") and a message."""
        if self._report is not None:
            self._report(fraction, message)

    def spawn(self, type_name: str, args: Mapping[str, Any] | None = None, **fields: Any) -> None:
        """Enqueue a child (``ref``, ``depends_on``, ``queue``, ``priority``, ``lane``,
        ``tags``, ``inputs`` as in a graph) when this attempt ends well."""
        self._children.append({"type": type_name, "args": dict(args or {}), **fields})

    def wait_for_children(self, on_child_failure: str = "fail") -> None:
        """Decide this task's outcome when its children end, not when the attempt does."""
        if on_child_failure not in ON_CHILD_FAILURE:
            raise ValueError(f"on_child_failure must be one of {', '.join(ON_CHILD_FAILURE)}")
        self._wait = True
        self._policy = on_child_failure

    def spawned(self) -> Spawn | None:
        if not self._children:
            return None
        return Spawn(tuple(self._children), self._wait, self._policy)
