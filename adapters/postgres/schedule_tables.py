"""The run-time schedules' tables, kept in step with their events in the same transactions:

- ``schedule_definitions``: one row per run-time schedule (its definition as JSON), written
  with ``ScheduleDefined``/``ScheduleUpdated``, deleted with ``ScheduleDeleted``. Every
  node's cron scheduler reads it each pass (``PostgresScheduleBook``).
- ``schedule_runs``: per schedule with an overlap policy, the last tick decided, the task of
  its last run, and how many ticks were skipped (the last one too). Written by the cron
  scheduler under a row lock (``schedule_runs.py``).

Like ``running.py``'s tables, they can be derived from the log; they are not a second truth.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql

from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.recorder import Statement
from execution_ledger.adapters.postgres.running import RunningTables
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.registry import TaskType
from execution_ledger.domain.schedule_definitions import schedule_from
from execution_ledger.domain.schedules import Schedule

log = logging.getLogger(__name__)

DEFINITIONS = "schedule_definitions"
RUNS = "schedule_runs"

_CREATE = """
CREATE TABLE IF NOT EXISTS {definitions} (
    name text PRIMARY KEY,
    definition jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {runs} (
    name text PRIMARY KEY,
    last_tick timestamptz,
    last_task_id uuid,
    skipped_ticks bigint NOT NULL DEFAULT 0,
    last_skipped_tick timestamptz
);
"""


@dataclass(frozen=True)
class RunsRow:
    """What a schedule's overlap policy has seen: skipped ticks and the last run."""

    skipped_ticks: int = 0
    last_skipped_tick: datetime | None = None
    last_task_id: UUID | None = None


class ScheduleTables:
    """SQL of the run-time schedule tables of one schema."""

    def __init__(self, schema: str) -> None:
        self.definitions = sql.Identifier(schema, DEFINITIONS)
        self.runs = sql.Identifier(schema, RUNS)
        self.clock = RunningTables(schema).schedule_clock
        self.keys = RunningTables(schema).keys

    def create_statement(self) -> sql.Composed:
        return sql.SQL(_CREATE).format(definitions=self.definitions, runs=self.runs)

    def defined(self, name: str, definition: Mapping[str, Any]) -> list[Statement]:
        """A new run-time schedule: its row, and a fresh clock and runs row (a name used
        before starts over: nothing of its earlier life is caught up or counted)."""
        return [
            Statement(
                sql.SQL(
                    "INSERT INTO {} (name, definition) VALUES (%s, %s::jsonb) "
                    "ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, "
                    "updated_at = now()"
                ).format(self.definitions),
                (name, json.dumps(definition)),
            ),
            *self._forget(name, (self.clock, self.runs)),
        ]

    def updated(self, name: str, definition: Mapping[str, Any]) -> list[Statement]:
        return [
            Statement(
                sql.SQL(
                    "UPDATE {} SET definition = %s::jsonb, updated_at = now() WHERE name = %s"
                ).format(self.definitions),
                (json.dumps(definition), name),
            )
        ]

    def deleted(self, name: str) -> list[Statement]:
        return self._forget(name, (self.definitions, self.clock, self.runs))

    def _forget(self, name: str, tables: Sequence[sql.Identifier]) -> list[Statement]:
        return [
            Statement(sql.SQL("DELETE FROM {} WHERE name = %s").format(table), (name,))
            for table in tables
        ]


class PostgresScheduleBook:
    """The run-time schedules, as this node's registry can run them (read each pass).

    ``task_types`` gives the registry's types at each pass (a node may take a new registry
    version while it runs)."""

    def __init__(
        self, store: EventStore, task_types: Callable[[], Mapping[str, TaskType]]
    ) -> None:
        self.store = store
        self.task_types = task_types
        tables = ScheduleTables(store.schema)
        self._sql_read = sql.SQL("SELECT name, definition::text AS text FROM {}").format(
            tables.definitions
        )
        # name -> (definition text, the task types it was built with, the schedule)
        self._built: dict[str, tuple[str, Mapping[str, TaskType], Schedule | None]] = {}

    def defined(self) -> dict[str, Schedule]:
        """Each run-time schedule; one this node cannot run (its task type is not in this
        node's registry) is left out with a warning, once per definition and registry."""
        with self.store.transaction() as cursor:
            rows = cursor.execute(self._sql_read).fetchall()
        task_types = self.task_types()
        schedules = {}
        for row in rows:
            schedule = self._build(row["name"], row["text"], task_types)
            if schedule is not None:
                schedules[row["name"]] = schedule
        return schedules

    def _build(
        self, name: str, text: str, task_types: Mapping[str, TaskType]
    ) -> Schedule | None:
        cached = self._built.get(name)
        if cached is not None and cached[0] == text and cached[1] is task_types:
            return cached[2]
        try:
            schedule: Schedule | None = schedule_from(name, json.loads(text), task_types)
        except ConfigError as error:
            log.warning("run-time schedule %s cannot run on this node: %s", name, error)
            schedule = None
        self._built[name] = (text, task_types, schedule)
        return schedule


def runs_rows(store: EventStore) -> dict[str, RunsRow]:
    """Every schedule's overlap counters (schedules without any are left out)."""
    table = ScheduleTables(store.schema).runs
    with store.transaction() as cursor:
        rows = cursor.execute(
            sql.SQL("SELECT name, skipped_ticks, last_skipped_tick, last_task_id FROM {}").format(
                table
            )
        ).fetchall()
    return {
        r["name"]: RunsRow(r["skipped_ticks"], r["last_skipped_tick"], r["last_task_id"])
        for r in rows
    }


def runtime_names(store: EventStore) -> list[str]:
    table = ScheduleTables(store.schema).definitions
    with store.transaction() as cursor:
        rows = cursor.execute(sql.SQL("SELECT name FROM {} ORDER BY name").format(table))
        return [r["name"] for r in rows.fetchall()]


def keys_held(store: EventStore, keys: Sequence[str]) -> int:
    """How many of ``keys`` a task holds (ticks enqueued already)."""
    if not keys:
        return 0
    table = ScheduleTables(store.schema).keys
    with store.transaction() as cursor:
        row = cursor.execute(
            sql.SQL(
                "SELECT count(*) AS n FROM {} WHERE key = ANY(%s) "
                "AND (expires_at IS NULL OR expires_at > now())"
            ).format(table),
            (list(keys),),
        ).fetchone()
    return int(row["n"]) if row else 0
