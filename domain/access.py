"""Refused requests: each denial is one event of the log, so the audit trail shows it."""

from __future__ import annotations

from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, event

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
