"""What an adapter is given (``Execution``) and the one result type every adapter returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from execution_ledger.domain.storable import storable, storable_text
from execution_ledger.domain.timeouts import Timeouts


@dataclass(frozen=True)
class Execution:
    """One attempt of one task, as handed to an adapter."""

    task_id: UUID
    attempt: int
    type_name: str
    args: dict[str, Any]
    settings: dict[str, Any]
    timeouts: Timeouts
    # Workflows: the dependencies' results by input name (``{"result": ..., "task_id": ...}``
    # each), None for a task that takes none; and where the task's code reports progress.
    inputs: Mapping[str, Any] | None = None
    progress: ProgressReport | None = None
    # The W3C trace context the attempt runs in (``traceparent``, ``tracestate``), or None:
    # adapters pass it on (an HTTP header, NATS headers, ``TRACEPARENT`` in the environment).
    trace: Mapping[str, str] | None = None


# progress (0..1, or None for "still alive") and a message; never raises, never blocks
ProgressReport = Callable[[float | None, str | None], None]


@dataclass(frozen=True)
class Spawn:
    """Children an attempt enqueues as it ends (``domain/children.py`` checks them):
    ``children`` as submitted (objects with ``type``, ``args``, ...), whether the parent
    waits for them, and what a failed child does to a waiting parent (fail, ignore)."""

    children: tuple[Mapping[str, Any], ...]
    wait: bool = False
    on_child_failure: str = "fail"


@dataclass(frozen=True)
class Success:
    """The attempt finished well. ``result`` is JSON-able; ``details`` holds facts such as
    ``exit_code`` or ``http_status`` that the learning dataset records."""

    result: Any
    details: dict[str, Any] = field(default_factory=dict)
    spawn: Spawn | None = None  # children a python callable enqueued through its context

    def __post_init__(self) -> None:
        """Text the log cannot store (a NUL, a lone surrogate) becomes U+FFFD (``storable``)."""
        object.__setattr__(self, "result", storable(self.result))
        object.__setattr__(self, "details", storable(self.details))


@dataclass(frozen=True)
class Failure:
    """The attempt finished badly. ``error_class`` is a short stable name (``ExitCode``,
    ``HttpStatus``, ``LuaError``, ``SandboxViolation``, ...) that retry policies match on."""

    error_class: str
    message: str
    retryable: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Text the log cannot store (a NUL, a lone surrogate) becomes U+FFFD (``storable``)."""
        object.__setattr__(self, "error_class", storable_text(self.error_class))
        object.__setattr__(self, "message", storable_text(self.message))
        object.__setattr__(self, "details", storable(self.details))


ExecutionResult = Success | Failure


@dataclass(frozen=True)
class ClaimedAttempt:
    """An attempt a worker has claimed (its ``TaskStarted`` is stored)."""

    task_id: UUID
    attempt: int
    type_name: str
    adapter: str
    args: dict[str, Any]
    adhoc_settings: dict[str, Any] | None
    timeouts: Timeouts
    queue: str
    lane: str | None
    inputs: Mapping[str, Any] | None = None  # resolved at claim time from the log
    refused: Failure | None = None  # inputs missing or too large: the attempt fails with it
    trace: Mapping[str, str] | None = None  # the trace context its task was enqueued in


@dataclass(frozen=True)
class AttemptOutcome:
    """How an attempt ended, as seen by its worker: a result, or a timeout it enforced."""

    task_id: UUID
    attempt: int
    result: ExecutionResult | None = None
    timed_out: bool = False
