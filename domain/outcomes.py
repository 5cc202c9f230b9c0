"""What follows the end of an attempt: the outcome event, then a retry when the policy allows.

Pure rules; the caller supplies the clock and a random draw for the back-off jitter.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from execution_ledger.domain.execution import Failure, Success
from execution_ledger.domain.retry import RetryPolicy
from execution_ledger.domain.task import FINAL_TIMEOUT_KINDS, Task
from execution_ledger.domain.timeouts import TimeoutKind


def task_retry_policy(task: Task) -> RetryPolicy:
    """The task's retry policy, with its (possibly manually raised) attempts budget."""
    return replace(RetryPolicy.from_dict(task.retry), max_attempts=task.max_attempts)


def record_result(
    task: Task, attempt: int, result: Success | Failure, now: datetime, jitter_draw: float
) -> None:
    """Append the attempt's outcome to ``task``, and a retry if the policy allows one."""
    if isinstance(result, Success):
        task.succeed(attempt, result.result, result.details)
        return
    task.fail(attempt, result.error_class, result.message, result.retryable, result.details)
    _maybe_retry(task, result.error_class, result.retryable, now, jitter_draw)


def record_timeout(task: Task, kind: TimeoutKind, now: datetime, jitter_draw: float) -> None:
    """Append ``TaskTimedOut`` of ``kind``, and a retry if the kind and the policy allow."""
    task.time_out(kind)
    if kind not in FINAL_TIMEOUT_KINDS:
        _maybe_retry(task, "Timeout", True, now, jitter_draw)


def _maybe_retry(
    task: Task, error_class: str, retryable: bool, now: datetime, jitter_draw: float
) -> None:
    policy = task_retry_policy(task)
    if policy.allows_retry(task.attempts, error_class, retryable):
        delay = policy.backoff(task.attempts, jitter_draw)
        task.schedule_retry(now + timedelta(seconds=delay))
