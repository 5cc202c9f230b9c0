"""The schedules of a deployment, as the ways in see them: the registry file's and the
run-time ones. List, define, update, delete, pause, resume and backfill them.

Each change is a ``ScheduleControl`` event naming the principal, saved with the
``schedule_definitions`` row it implies (one transaction); a refusal (rights, a definition
``build_schedule`` does not accept, a file schedule's name) records nothing. A file
schedule may be paused, resumed and backfilled here, but is changed in the file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from execution_ledger.adapters.ledger import SYSTEM, Ledger
from execution_ledger.adapters.postgres.concurrent_write import retry_on_conflict
from execution_ledger.adapters.postgres.recorder import Statement
from execution_ledger.adapters.postgres.schedule_tables import (
    RunsRow,
    ScheduleTables,
    keys_held,
    runs_rows,
    runtime_names,
)
from execution_ledger.domain.errors import (
    ConfigError,
    InvalidSchedule,
    InvalidTransition,
    UnknownSchedule,
)
from execution_ledger.domain.schedule_control import ScheduleControl
from execution_ledger.domain.schedule_definitions import (
    MAX_BACKFILL_TICKS,
    check_backfill_range,
    check_schedule_rights,
    checked_definition,
    schedule_from,
    tick_request,
    updated_definition,
)
from execution_ledger.domain.schedules import Schedule
from execution_ledger.domain.submission import Requester

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduleView:
    """One schedule as listed: where it comes from, whether it is paused, what its
    overlap policy skipped."""

    schedule: Schedule
    source: str  # "file" or "runtime"
    paused: bool
    runs: RunsRow


@dataclass(frozen=True)
class Backfill:
    """A backfill's count: ticks in the range, tasks created now, ticks enqueued before."""

    name: str
    since: datetime
    until: datetime
    ticks: int
    enqueued: int
    existing: int
    dry_run: bool
    task_ids: tuple[UUID, ...] = ()


class Schedules:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.store = ledger.store
        self.registry = ledger.registry
        self.tables = ScheduleTables(ledger.store.schema)

    # -- reading ------------------------------------------------------------------------

    def all(self) -> list[ScheduleView]:
        """Every schedule, by name (a run-time one shadowed by a file one is left out)."""
        names = sorted(set(self.registry.schedules) | set(runtime_names(self.store)))
        runs = runs_rows(self.store)
        views = (self._view(name, runs) for name in names)
        return [view for view in views if view is not None]

    def get(self, name: str) -> ScheduleView:
        view = self._view(name, runs_rows(self.store))
        if view is None:
            raise UnknownSchedule(f"unknown schedule {name!r}")
        return view

    def _view(self, name: str, runs: Mapping[str, RunsRow]) -> ScheduleView | None:
        control = self.store.load_schedule_control(name)
        file_schedule = self.registry.schedules.get(name)
        if file_schedule is not None:
            return ScheduleView(file_schedule, "file", control.paused, runs.get(name, RunsRow()))
        if control.definition is None:
            return None
        try:
            schedule = schedule_from(name, control.definition, self.registry.task_types)
        except ConfigError as error:  # its task type left this process's registry file
            log.warning("run-time schedule %s is not listed: %s", name, error)
            return None
        return ScheduleView(schedule, "runtime", control.paused, runs.get(name, RunsRow()))

    # -- changing -----------------------------------------------------------------------

    def define(
        self, name: str, spec: Mapping[str, Any], requester: Requester = SYSTEM
    ) -> ScheduleView:
        """A new run-time schedule (``paused: true`` in ``spec`` defines it paused)."""
        spec = dict(spec)
        paused = spec.pop("paused", False)
        if not isinstance(paused, bool):
            raise InvalidSchedule("paused: must be true or false")
        task_type = spec.get("task_type")
        check_schedule_rights(
            self.registry, requester, task_type if isinstance(task_type, str) else None
        )
        definition = checked_definition(name, spec, self.registry.task_types)
        if name in self.registry.schedules:
            raise InvalidTransition(
                f"schedule {name!r} is defined in the registry file; change it there "
                "(or choose another name)"
            )

        def define(control: ScheduleControl) -> list[Statement]:
            control.define(definition, by=requester.principal)
            inline = self.tables.defined(name, definition)
            if paused:
                control.pause(by=requester.principal)
                inline.append(self.ledger.running.set_schedule_paused(name, True))
            return inline

        self._change(name, define)
        return self.get(name)

    def update(
        self, name: str, patch: Mapping[str, Any], requester: Requester = SYSTEM
    ) -> tuple[ScheduleView, dict[str, list[Any]]]:
        """Change keys of a run-time schedule; returns it and what changed."""
        check_schedule_rights(self.registry, requester)
        updated_definition({}, patch)  # refuses an empty change before looking for it
        self._refuse_file_schedule(name, "changed")
        changed: dict[str, list[Any]] = {}

        def update(control: ScheduleControl) -> list[Statement]:
            current = control.definition
            if current is None:
                raise UnknownSchedule(f"unknown schedule {name!r}")
            merged = updated_definition(current, patch)
            check_schedule_rights(
                self.registry,
                requester,
                merged["task_type"] if isinstance(merged.get("task_type"), str) else None,
            )
            definition = checked_definition(name, merged, self.registry.task_types)
            changed.clear()
            changed.update(control.update(definition, by=requester.principal))
            return self.tables.updated(name, definition) if changed else []

        self._change(name, update)
        return self.get(name), changed

    def delete(self, name: str, requester: Requester = SYSTEM) -> None:
        check_schedule_rights(self.registry, requester)
        self._refuse_file_schedule(name, "deleted")

        def delete(control: ScheduleControl) -> list[Statement]:
            if control.definition is None:
                raise UnknownSchedule(f"unknown schedule {name!r}")
            control.delete(by=requester.principal)
            return self.tables.deleted(name)

        self._change(name, delete)

    def pause(self, name: str, requester: Requester = SYSTEM) -> ScheduleView:
        check_schedule_rights(self.registry, requester)
        self.ledger.pause_schedule(name, requester.principal)
        return self.get(name)

    def resume(self, name: str, requester: Requester = SYSTEM) -> ScheduleView:
        check_schedule_rights(self.registry, requester)
        self.ledger.resume_schedule(name, requester.principal)
        return self.get(name)

    def backfill(
        self,
        name: str,
        since: datetime,
        until: datetime,
        requester: Requester = SYSTEM,
        dry_run: bool = False,
    ) -> Backfill:
        """Enqueue every tick in [since, until] (each with its tick key: a tick enqueued
        before, by the scheduler or a backfill, is not enqueued again), as ``requester``,
        whatever the overlap policy; at most ``MAX_BACKFILL_TICKS``."""
        schedule = self.get(name).schedule
        check_schedule_rights(self.registry, requester, schedule.task_type)
        check_backfill_range(since, until)
        ticks = schedule.ticks_between(since, until, MAX_BACKFILL_TICKS)
        if len(ticks) > MAX_BACKFILL_TICKS:
            raise InvalidSchedule(
                f"the range holds more than {MAX_BACKFILL_TICKS} ticks of {name!r}; "
                "backfill a shorter range"
            )
        existing = keys_held(self.store, [schedule.idempotency_key(t) for t in ticks])
        if dry_run:
            return Backfill(name, since, until, len(ticks), 0, existing, True)
        created = []
        for tick in ticks:
            request = tick_request(schedule, tick, backfill=True)
            task, new = self.ledger.enqueue_once(request, requester)
            if new:
                created.append(task.id)

        def record(control: ScheduleControl) -> list[Statement]:
            control.backfilled(since, until, len(ticks), len(created), by=requester.principal)
            return []

        self._change(name, record)
        enqueued = len(created)
        return Backfill(
            name, since, until, len(ticks), enqueued, len(ticks) - enqueued, False, tuple(created)
        )

    def _refuse_file_schedule(self, name: str, how: str) -> None:
        if name in self.registry.schedules:
            raise InvalidTransition(
                f"schedule {name!r} is defined in the registry file and is {how} there "
                "(it may be paused, resumed and backfilled at run time)"
            )

    def _change(self, name: str, change: Callable[[ScheduleControl], list[Statement]]) -> None:
        """Load, change, save; on a concurrent write, reload and decide again."""

        def load_change_save() -> None:
            control = self.store.load_schedule_control(name)
            inline = change(control)
            if control.pending_events:
                self.store.save(control, inline=inline)

        retry_on_conflict(load_change_save, what=f"schedule {name!r}")
