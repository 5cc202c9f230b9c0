"""Retry on a concurrent write: the one rule for a load-decide-save step that lost a race.

A step loads what it decides on (a task, a queue's or a schedule's switch, the registry
history, a projection's position), decides, and saves with optimistic concurrency. When a
concurrent writer took the aggregate's next version or a unique key (idempotency, singleton,
debounce) first, the save raises the library's ``IntegrityError`` and nothing of the step
was stored, so deciding again on a fresh load is right. A step that sees the race without
an error (a key's holder moved on, a position another process advanced) returns ``AGAIN``.

``retry_on_conflict`` runs the step up to ``CONFLICT_TRIES`` times (one bound for every
caller), then raises ``KeptChanging`` naming what kept changing. A conflict that is the
caller's answer rather than a race (``is_conflict`` says no) is raised at once.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Final, TypeVar

from eventsourcing.persistence import IntegrityError

from execution_ledger.domain.errors import InvalidTransition

CONFLICT_TRIES: Final = 5

T = TypeVar("T")


class Again(Enum):
    """A step's answer that it met a concurrent write without an error: try again."""

    AGAIN = "again"


AGAIN: Final = Again.AGAIN


class KeptChanging(InvalidTransition):
    """A step met a concurrent write on every try; nothing of its last try was stored."""


def _always(_error: IntegrityError) -> bool:
    return True


def _quiet(_try: int) -> None:
    return None


def retry_on_conflict(
    step: Callable[[], T | Again],
    *,
    what: str,
    bound: int = CONFLICT_TRIES,
    is_conflict: Callable[[IntegrityError], bool] = _always,
    on_conflict: Callable[[int], None] = _quiet,
) -> T:
    """``step()``'s result, trying it again (a fresh load, a fresh decision) while it meets
    a concurrent write, at most ``bound`` times in all. ``what`` names what is being
    changed (``task 1234…``, ``queue 'emails'``) for the error; ``on_conflict`` hears the
    number of each try that conflicted (to log it)."""
    for attempt in range(1, bound + 1):
        try:
            result = step()
        except IntegrityError as error:
            if not is_conflict(error):
                raise
            on_conflict(attempt)
            continue
        if result is AGAIN:
            on_conflict(attempt)
            continue
        return result
    raise KeptChanging(
        f"{what} kept changing: each of {bound} tries met a concurrent write; try again"
    )
