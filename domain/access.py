"""Refused requests: each denial is one event of the log, so the audit trail shows it."""

from __future__ import annotations

import threading
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, event

from execution_ledger.domain.stored_topics import pin_topics

MAX_REASON_CHARS = 500


class AccessDenial(Aggregate):
    class AccessDenied(Aggregate.Created):
        principal: str
        action: str
        reason: str

    @event(AccessDenied)
    def __init__(self, id: UUID, principal: str, action: str, reason: str) -> None:
        self.principal = principal
        self.action = action
        self.reason = reason

    @classmethod
    def record(cls, principal: str, action: str, reason: str) -> AccessDenial:
        return cls(id=uuid4(), principal=principal, action=action, reason=reason[:MAX_REASON_CHARS])


DENIALS_PER_MINUTE = 60


class DenialBudget:
    """How many refusals per principal a minute become ``AccessDenied`` events (the rest
    are only counted and logged), so a flood of bad requests cannot flood the log."""

    def __init__(self, per_minute: int = DENIALS_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._minute = 0
        self._counts: dict[str, int] = {}

    def allow(self, key: str, now_seconds: float) -> bool:
        """Take one from ``key``'s budget for the minute of ``now_seconds``, if any is left."""
        minute = int(now_seconds // 60)
        with self._lock:
            if minute != self._minute:
                self._minute, self._counts = minute, {}
            count = self._counts.get(key, 0)
            if count >= self.per_minute:
                return False
            self._counts[key] = count + 1
            return True


pin_topics(AccessDenial)  # the log's names for these classes (see stored_topics)
