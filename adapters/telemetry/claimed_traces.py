"""The dispatch as the worker sees it: ``PostgresDispatch`` whose claimed attempts carry
the trace context their task was stored with (``TaskEnqueued.trace``).

The claim already folded each task it started (and keeps it, ``_started``, to record its
outcome without a reload); the context is read from there, so it costs no query. Tasks
stored with no context (most, with telemetry off) cost a dictionary look-up each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from adapters.postgres.dispatch import PostgresDispatch
from domain.execution import AttemptOutcome, ClaimedAttempt
from processors.worker import ProgressNote


class TracedClaims:
    """``processors.worker.Dispatch`` over a ``PostgresDispatch``."""

    def __init__(self, dispatch: PostgresDispatch) -> None:
        self.dispatch = dispatch

    def claim(
        self,
        queues: Sequence[str],
        limit: int,
        worker: str,
        outcomes: Sequence[AttemptOutcome] = (),
    ) -> list[ClaimedAttempt]:
        claimed = self.dispatch.claim(queues, limit, worker, outcomes)
        started: Mapping[UUID, Any] = getattr(self.dispatch, "_started", {})
        carried = claimed
        for index, attempt in enumerate(claimed):
            trace = getattr(started.get(attempt.task_id), "trace", None)
            if trace and attempt.trace is None:
                if carried is claimed:
                    carried = list(claimed)
                carried[index] = dataclasses.replace(attempt, trace=trace)
        return carried

    def complete(self, outcomes: Sequence[AttemptOutcome]) -> None:
        self.dispatch.complete(outcomes)

    def renew(
        self, worker: str, held: Sequence[UUID], progress: Sequence[ProgressNote] = ()
    ) -> set[UUID]:
        return self.dispatch.renew(worker, held, progress)

    def next_due(self, queues: Sequence[str]) -> datetime | None:
        return self.dispatch.next_due(queues)
