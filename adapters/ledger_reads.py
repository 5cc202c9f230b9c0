"""What the ways in read, in one place: ``LedgerReads``, the query side beside the
``Ledger``'s commands (``Runtime.reads``). The HTTP API, the NATS ingress and the CLI ask it
for a task and its history, the task list, a task's graph, a queue's ready set, counts,
workers, positions and the global log; it answers from the log (one task) or from the read
models (``postgres/task_queries.py``), so no way in reaches ``adapters/postgres/`` itself.

Every method is blocking (a way in on an event loop runs it off the loop).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from execution_ledger.adapters import event_log
from execution_ledger.adapters.postgres import audit, task_queries
from execution_ledger.adapters.postgres.event_store import EventStore, RecordedEvent
from execution_ledger.adapters.postgres.read_replica import ReadStatus, read_status, whole_log_url
from execution_ledger.adapters.postgres.task_prefix import task_ids_between
from execution_ledger.domain.errors import TaskNotFound
from execution_ledger.domain.task import Task, TaskState

# The read models' types and bounds, for the ways in that parse a query.
TaskFilter = task_queries.TaskFilter
TaskPage = task_queries.Page
TaskGraph = task_queries.TaskGraph
MAX_PAGE = task_queries.MAX_PAGE
MAX_ACTIVITY_MINUTES = task_queries.MAX_ACTIVITY_MINUTES
EventFilter = event_log.EventFilter
EventPage = event_log.EventPage
AuditFilter = audit.AuditFilter
AuditEntry = audit.AuditEntry

__all__ = [
    "MAX_ACTIVITY_MINUTES",
    "MAX_PAGE",
    "AuditEntry",
    "AuditFilter",
    "EventFilter",
    "EventPage",
    "LedgerReads",
    "RecordedEvent",
    "TaskFilter",
    "TaskGraph",
    "TaskPage",
]


class LedgerReads:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    # -- one task, from the log ---------------------------------------------------------

    def task_and_history(self, task_id: UUID) -> tuple[Task, list[RecordedEvent]]:
        """A task and its events, current to the log (``TaskNotFound`` when the id is not
        a task's): the task folded from the very events returned, so the two agree."""
        events = self.store.history(task_id)
        task: Any = None
        for recorded in events:
            task = recorded.event.mutate(task)
        if not isinstance(task, Task):
            raise TaskNotFound(f"no task {task_id}")
        return task, events

    def held_by(self, task: Task) -> str | None:
        """The rate limit holding a waiting task back, if one does."""
        if task.state not in (TaskState.READY, TaskState.SCHEDULED):
            return None
        return task_queries.rate_limit_hold(self.store, task.id)

    def task_ids_between(self, low: UUID, high: UUID, limit: int) -> list[UUID]:
        """Up to ``limit`` task ids from ``low`` to ``high``: how an id prefix is found."""
        return task_ids_between(self.store, low, high, limit)

    # -- the read models ----------------------------------------------------------------

    def tasks(self, where: TaskFilter, limit: int = 50, cursor: str | None = None) -> TaskPage:
        """A page of the task list, newest first (the task view trails the log a moment)."""
        return task_queries.list_tasks(self.store, where, limit=limit, cursor=cursor)

    def task_graph(self, task_id: UUID) -> TaskGraph:
        return task_queries.task_graph(self.store, task_id)

    def ready_tasks(self, queue: str, limit: int) -> list[dict[str, Any]]:
        return task_queries.ready_tasks(self.store, queue, limit)

    def queue_counts(self) -> dict[str, dict[str, Any]]:
        return task_queries.queue_counts(self.store)

    def queue_paused(self, name: str) -> bool:
        return self.store.load_queue(name).paused

    def worker_nodes(self) -> list[dict[str, Any]]:
        return task_queries.worker_nodes(self.store)

    def task_type_statistics(self, type_name: str) -> dict[str, Any]:
        return task_queries.task_type_statistics(self.store, type_name)

    def finished_per_minute(self, minutes: int) -> list[dict[str, Any]]:
        return task_queries.finished_per_minute(self.store, minutes)

    def task_counts(self) -> list[dict[str, Any]]:
        return task_queries.task_counts(self.store)

    def task_duration_buckets(self, buckets: list[float]) -> list[dict[str, Any]]:
        return task_queries.task_duration_buckets(self.store, buckets)

    # -- the log and its followers ------------------------------------------------------

    def head_position(self) -> int:
        return self.store.head_position()

    def projection_positions(self) -> dict[str, int]:
        return task_queries.projection_positions(self.store)

    def has_replica(self) -> bool:
        """Whether a read replica is configured (``LEDGER_READ_DATABASE_URL``)."""
        return self.store.replica is not None

    def read_status(self) -> ReadStatus:
        """Where the lag-tolerant reads go now (the replica, or the primary)."""
        return read_status(self.store)

    def events(self, after: int, limit: int, where: EventFilter) -> EventPage:
        """A page of the global log after a position, filtered."""
        return event_log.read_events(self.store, after, limit, where)

    def audit_events(self, where: AuditFilter, after: int, limit: int) -> audit.AuditPage:
        """The log with the principal and the actor of each event (the audit trail)."""
        return audit.audit_events(self.store, where, after, limit)

    def whole_log_url(self) -> tuple[str, str]:
        """Where a read of the whole log goes ("replica" once it holds it all, else
        "primary") and its connection string."""
        return whole_log_url(self.store)
