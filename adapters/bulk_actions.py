"""Bulk actions by filter: cancel, retry, re-prioritise or move every task that matches a
task filter, as ``Ledger.bulk_*`` does them (docs/patterns.md, "Bulk actions").

1. ``plan_bulk``: the action and filter checked (an unknown state, queue or action, a
   priority out of range, an empty filter, a state the action never changes: ``InvalidQuery``).
2. ``preview``: how many tasks match now, a sample of their ids, and the role check of every
   kind of task among them (``permit`` raises ``Forbidden``); nothing is written. A dry run
   stops here.
3. ``request``: the same, then a ``BulkActionRequested`` event (action, filter, principal,
   the count) — the id that names the action from then on.
4. ``run``: the matches enqueued by then, read page by page (``BATCH_SIZE`` ids), each page
   loaded from the log and changed in one transaction with the action's progress; a task
   that moved on since it matched (ended, started, already at that priority or queue) is
   skipped and counted. The end is ``BulkActionCompleted`` (or ``BulkActionStopped`` when a
   failure or a stop request ends it early: what was changed stays changed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from execution_ledger.adapters.postgres.bulk_matches import BulkMatches
from execution_ledger.adapters.postgres.concurrent_write import KeptChanging, retry_on_conflict
from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.recorder import Statement
from execution_ledger.adapters.postgres.running import RunningTables
from execution_ledger.adapters.postgres.task_queries import TaskFilter
from execution_ledger.adapters.task_filters import filter_json, is_empty, parse_time
from execution_ledger.domain.bulk import (
    BulkAction,
    BulkActionNotFound,
    BulkChange,
    BulkKind,
    MatchedKind,
    apply_change,
    check_state_filter,
    plan_change,
)
from execution_ledger.domain.children import notify_parents
from execution_ledger.domain.errors import (
    Forbidden,
    InvalidQuery,
    InvalidTransition,
    SingletonKeyTaken,
)
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.submission import Requester
from execution_ledger.domain.task import Task, TaskState

BATCH_SIZE = 500  # tasks changed per transaction
SAMPLE_SIZE = 10

# Raises ``Forbidden`` when the requester may not do this action to tasks of this kind.
Permit = Callable[[BulkChange, MatchedKind], None]
Retake = Callable[[Task], list[Statement]]
Progress = Callable[[BulkAction], None]


def allow_all(change: BulkChange, kind: MatchedKind) -> None:
    """The permit of the local admin (the CLI)."""


@dataclass(frozen=True)
class BulkRequest:
    change: BulkChange
    where: TaskFilter


@dataclass(frozen=True)
class BulkPreview:
    """What an action would change now: the count, a sample of ids, the kinds of task."""

    matched: int
    sample: list[UUID]
    kinds: list[MatchedKind] = field(default_factory=list)


def plan_bulk(
    registry: Registry,
    action: str,
    where: TaskFilter,
    priority: int | None = None,
    queue: str | None = None,
    reason: str = "",
) -> BulkRequest:
    """A checked request; ``InvalidQuery`` naming what is wrong."""
    change = plan_change(registry, action, priority, queue, reason)
    if is_empty(where):
        raise InvalidQuery(
            "name at least one filter (state, type, queue, lane, tag, since, until, text); "
            "a bulk action never acts on every task unasked"
        )
    check_state_filter(change, where.state)
    return BulkRequest(change, where)


class BulkActions:
    """Bulk actions over one event store."""

    def __init__(
        self,
        store: EventStore,
        registry: Registry,
        clock: Callable[[], datetime],
        running: RunningTables,
        batch_size: int = BATCH_SIZE,
        retake: Retake = lambda task: [],
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.running = running
        self.batch_size = batch_size
        # A retried task's singleton key taken again (``CoalescedEnqueue.retaken``):
        # ``SingletonKeyTaken`` while another live task holds it.
        self.retake = retake

    # -- before anything is written -----------------------------------------------------

    def preview(self, request: BulkRequest, permit: Permit = allow_all) -> BulkPreview:
        """Count and sample the matches and check the role on each kind; writes nothing."""
        matches = self._matches(request.change, request.where, self.clock())
        kinds = matches.kinds()
        for kind in kinds:
            permit(request.change, kind)
        sample = [task_id for _, task_id in matches.page(None, SAMPLE_SIZE)]
        return BulkPreview(matches.count(), sample, kinds)

    def request(
        self, request: BulkRequest, requester: Requester, permit: Permit = allow_all
    ) -> BulkAction:
        """Record the request (after the preview's checks); returns the saved action."""
        preview = self.preview(request, permit)
        action = BulkAction.request(
            request.change,
            filter_json(request.where),
            requester.principal,
            requester.role,
            preview.matched,
        )
        self.store.save(action)
        return action

    # -- the run ------------------------------------------------------------------------

    def run(
        self,
        bulk_id: UUID,
        permit: Permit = allow_all,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> BulkAction:
        """Change the matches batch by batch; returns the action once it ended."""
        action = self.load(bulk_id)
        if action.state != "running":
            raise InvalidTransition(f"bulk action {bulk_id} is {action.state} already")
        where = stored_filter(action)
        matches = self._matches(action.change, where, action.created_on)
        tally = _Tally()
        try:
            for ids in matches.pages(self.batch_size):
                if should_stop():
                    raise _Stopped("asked to stop (the server is shutting down)")
                action = self._run_batch(action, ids, where, permit, tally)
                if progress is not None:
                    progress(action)
        except BaseException as error:  # a failure, Ctrl-C, a stop: recorded, then raised
            self._stop(bulk_id, tally, error)
            raise
        action = self.load(bulk_id)
        action.complete(tally.changed, tally.skipped_at_end(action.matched))
        self.store.save(action)
        if progress is not None:
            progress(action)
        return action

    def load(self, bulk_id: UUID) -> BulkAction:
        action = self.store.load_bulk_action(bulk_id)
        if action is None:
            raise BulkActionNotFound(f"no bulk action {bulk_id}")
        return action

    def _matches(self, change: BulkChange, where: TaskFilter, by: datetime) -> BulkMatches:
        return BulkMatches(self.store, where, [s.value for s in change.kind.states], by)

    def _run_batch(
        self,
        action: BulkAction,
        ids: list[UUID],
        where: TaskFilter,
        permit: Permit,
        tally: _Tally,
    ) -> BulkAction:
        """One page: changed together with the action's progress, or one by one after a
        concurrent write to one of them."""
        tasks = self.store.load_many(ids)
        batch = _Batch()
        now = self.clock()
        decide = partial(self._change_one, action, where, permit, now)
        for task_id in ids:
            batch.take(tasks.get(task_id), decide)
        self._keys_of_retries(action, batch)
        action.progress(tally.changed + len(batch.changed), tally.skipped + batch.skipped)
        try:
            self._save(batch, action)
        except IntegrityError:  # one of them changed meanwhile: each on its own
            action = self.load(action.id)
            changed, skipped = self._one_by_one(action, ids, where, permit)
            tally.add(changed, skipped)
            action.progress(tally.changed, tally.skipped)
            self.store.save(action)
            return action
        tally.add(len(batch.changed), batch.skipped)
        return action

    def _change_one(
        self, action: BulkAction, where: TaskFilter, permit: Permit, now: datetime, task: Task
    ) -> bool:
        """Apply the action to one task (its event pending); False when it is skipped."""
        if not still_matches(task, where):
            return False
        try:
            permit(action.change, MatchedKind(task.type_name, task.adapter))
            return apply_change(action.change, task, action.principal, action.id, now)
        except (InvalidTransition, Forbidden):
            return False

    def _keys_of_retries(self, action: BulkAction, batch: _Batch) -> None:
        if action.change.kind is BulkKind.RETRY:
            self._retaken_keys(batch)

    def _retaken_keys(self, batch: _Batch) -> None:
        """A retry makes its task live again: one whose singleton key another live task
        holds (or an earlier task of this batch takes) is skipped, unsaved; the others take
        their key again in the batch's transaction."""
        kept: list[Task] = []
        taken: set[tuple[str, str]] = set()
        for task in batch.changed:
            key = task.singleton_key
            if key is None:
                kept.append(task)
                continue
            try:
                if (task.type_name, key) in taken:
                    raise SingletonKeyTaken(key)
                batch.keys += self.retake(task)
            except SingletonKeyTaken:
                batch.skipped += 1
                continue
            taken.add((task.type_name, key))
            kept.append(task)
        batch.changed = kept

    def _one_by_one(
        self, action: BulkAction, ids: list[UUID], where: TaskFilter, permit: Permit
    ) -> tuple[int, int]:
        changed = skipped = 0
        for task_id in ids:
            if self._change_alone(action, task_id, where, permit):
                changed += 1
            else:
                skipped += 1
        return changed, skipped

    def _change_alone(
        self, action: BulkAction, task_id: UUID, where: TaskFilter, permit: Permit
    ) -> bool:
        """One task in its own transaction; reloaded and decided again on a conflict (a
        task that keeps changing is skipped)."""

        def load_change_save() -> bool:
            batch = _Batch()
            batch.take(
                self.store.load_many([task_id]).get(task_id),
                partial(self._change_one, action, where, permit, self.clock()),
            )
            self._keys_of_retries(action, batch)
            if not batch.changed:
                return False
            self._save(batch)
            return True

        try:
            return retry_on_conflict(load_change_save, what=f"task {task_id}")
        except KeptChanging:
            return False

    def _save(self, batch: _Batch, *others: BulkAction) -> None:
        """The changed tasks (with the parents a cancel decides, the statements that stop
        the attempts a cancel ended, and the singleton keys retried tasks take again) and
        ``others``, in one transaction."""
        inline = [*self.running.attempts_stopped(batch.stopped), *batch.keys]
        parents = notify_parents(batch.changed, self.store.load_many)
        self.store.save(*batch.changed, *parents, *others, inline=inline)

    def _stop(self, bulk_id: UUID, tally: _Tally, error: BaseException) -> None:
        """Record why the run ended early, when the database lets us."""
        try:
            action = self.load(bulk_id)
            action.stop(tally.changed, tally.skipped, str(error) or type(error).__name__)
            self.store.save(action)
        except Exception:  # the database is away: the action stays "running" in the log
            pass


class _Stopped(Exception):
    """The run was asked to stop between two batches."""


@dataclass
class _Batch:
    """One page's outcome: the tasks changed, the attempts a cancel ended, the skips."""

    changed: list[Task] = field(default_factory=list)
    stopped: list[UUID] = field(default_factory=list)
    skipped: int = 0
    keys: list[Statement] = field(default_factory=list)  # singleton keys retries take again

    def take(self, task: Task | None, change: Callable[[Task], bool]) -> None:
        """Count ``task`` as changed (``change`` said so) or skipped (missing, or not)."""
        running = task is not None and task.state is TaskState.RUNNING
        if task is None or not change(task):
            self.skipped += 1
            return
        self.changed.append(task)
        if running:  # only a cancel changes a running task: its attempt must stop
            self.stopped.append(task.id)


@dataclass
class _Tally:
    changed: int = 0
    skipped: int = 0
    seen: int = 0

    def add(self, changed: int, skipped: int) -> None:
        self.changed += changed
        self.skipped += skipped
        self.seen += changed + skipped

    def skipped_at_end(self, matched: int) -> int:
        """Skipped: the tasks seen and not changed, plus those counted at the request that
        had left the filter before their page was read (they moved on too)."""
        return self.skipped + max(0, matched - self.seen)


def still_matches(task: Task, where: TaskFilter) -> bool:
    """The filter's fields a task may have changed since the task view was read (its
    state, its queue); the others (type, lane, tags, enqueue time) never change."""
    if where.state is not None and task.state.value != where.state:
        return False
    return where.queue is None or task.queue == where.queue


def stored_filter(action: BulkAction) -> TaskFilter:
    """The filter a stored action was asked with, read back from its JSON."""
    given = action.task_filter
    return TaskFilter(
        state=given.get("state"),
        type_name=given.get("type"),
        queue=given.get("queue"),
        lane=given.get("lane"),
        tag=given.get("tag"),
        since=parse_time(given.get("since"), "since"),
        until=parse_time(given.get("until"), "until"),
        text=given.get("text"),
    )


__all__ = [
    "BATCH_SIZE",
    "BulkActionNotFound",
    "BulkActions",
    "BulkKind",
    "BulkPreview",
    "BulkRequest",
    "Permit",
    "allow_all",
    "plan_bulk",
]
