"""A tick of a schedule with an overlap policy (``skip``, ``queue_one``), decided once.

Under the lock of the schedule's ``schedule_runs`` row: a tick already decided (by another
node) is left alone; otherwise the state of the schedule's last run is read from the log,
``overlap_allows`` decides, and either the tick's task is enqueued (with its tick key: one
task per tick whoever enqueues it) and becomes the last run, or the tick is counted as
skipped. The lock is released when the decision is recorded, so each tick is enqueued once
or skipped once, whatever the number of nodes. (A node that stops between the enqueue and
the record leaves the tick to the next pass, which finds the task by its key.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import DictRow

from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.schedule_tables import ScheduleTables
from execution_ledger.domain.errors import InvalidTransition
from execution_ledger.domain.schedule_definitions import overlap_allows
from execution_ledger.domain.schedules import Schedule
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import Task, TaskState
from execution_ledger.processors.cron import TickOutcome


class Enqueuer(Protocol):
    def enqueue_once(self, request: TaskRequest) -> tuple[Task, bool]: ...


class PostgresScheduleRuns:
    def __init__(self, store: EventStore, ledger: Enqueuer) -> None:
        self.store = store
        self.ledger = ledger
        runs = ScheduleTables(store.schema).runs
        self._sql_row = sql.SQL(
            "INSERT INTO {0} (name) VALUES (%s) ON CONFLICT (name) DO NOTHING"
        ).format(runs)
        self._sql_lock = sql.SQL(
            "SELECT last_tick, last_task_id FROM {} WHERE name = %s FOR UPDATE"
        ).format(runs)
        self._sql_ran = sql.SQL(
            "UPDATE {} SET last_tick = %s, last_task_id = %s WHERE name = %s"
        ).format(runs)
        self._sql_skipped = sql.SQL(
            "UPDATE {} SET last_tick = %s, skipped_ticks = skipped_ticks + 1, "
            "last_skipped_tick = %s WHERE name = %s"
        ).format(runs)

    def fire(self, schedule: Schedule, tick: datetime, request: TaskRequest) -> TickOutcome:
        with self.store.transaction() as cursor:
            cursor.execute(self._sql_row, (schedule.name,))
            row = cursor.execute(self._sql_lock, (schedule.name,)).fetchone()
            if row is None:  # pragma: no cover - inserted just above
                raise InvalidTransition(f"schedule {schedule.name!r} has no runs row")
            if row["last_tick"] is not None and row["last_tick"] >= tick:
                return TickOutcome(None, created=False)  # decided on another node
            if not overlap_allows(schedule.overlap, self._state(cursor, row["last_task_id"])):
                cursor.execute(self._sql_skipped, (tick, tick, schedule.name))
                return TickOutcome(None, created=False, skipped=True)
            task, created = self.ledger.enqueue_once(request)
            cursor.execute(self._sql_ran, (tick, task.id, schedule.name))
            return TickOutcome(task.id, created)

    def _state(self, cursor: psycopg.Cursor[DictRow], task_id: UUID | None) -> TaskState | None:
        """The state of the schedule's last run (None: none, or not found)."""
        if task_id is None:
            return None
        task = self.store.load_many([task_id], cursor).get(task_id)
        return task.state if task is not None else None
