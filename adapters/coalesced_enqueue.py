"""The enqueues that coalesce (``domain/coalescing.py``): a singleton key answered with its
holder, a debounce folded into the pending task of its key.

``Ledger.enqueue_recorded`` hands a planned task that has a singleton or debounce key to
``CoalescedEnqueue.try_enqueue``, which makes one try:

- **singleton**: the key's holder (a live row of ``singleton_keys``), or the new task saved
  with the insert of its key. Two enqueues that both saw no holder (threads of one batch of
  the group commit, or other nodes) both insert: one save is refused by the unique key and
  its caller looks again, finding the winner.
- **debounce**: the task the key names, if it has not started yet, gets ``TaskDebounced``
  (its new ``run_at``, and the args in mode ``last``), saved at its next version: a worker
  that started it meanwhile makes that save fail, and the caller looks again, finding it
  started. Otherwise a new task, saved with the key moved over to it. The submissions of
  one key take turns within a process (``KeyLocks``), so a burst from many threads does not
  fail on the task's version; against other nodes, a lost save looks again (up to
  ``DEBOUNCE_TRIES``).

``None`` means the try met a concurrent write: the ledger tries again (up to five times).
Graphs and ``enqueue_in`` take singleton keys in ``statements_for_graph`` (a held key is
refused there, as a held idempotency key is) and refuse debounce; a manual retry of an ended
task takes its singleton key again (``retaken``), or is refused while another task holds it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from psycopg import sql

from execution_ledger.adapters.postgres.coalescing_keys import CoalescingKeys
from execution_ledger.adapters.postgres.concurrent_write import KeptChanging, retry_on_conflict
from execution_ledger.adapters.postgres.event_store import EventStore, RecordedEvent
from execution_ledger.adapters.postgres.recorder import Statement
from execution_ledger.domain.coalescing import Debounce, debounced_start
from execution_ledger.domain.errors import InvalidSubmission, SingletonKeyTaken
from execution_ledger.domain.submission import Requester, TaskRequest
from execution_ledger.domain.task import DEBOUNCEABLE_STATES, Task

Enqueued = tuple[Task, bool, list[RecordedEvent]]  # the task, whether new, its events if new
# TaskDebounced saves lost to other nodes' (or a start) before giving up: above
# retry_on_conflict's usual bound, a burst of one key from several nodes is this helper's case.
DEBOUNCE_TRIES = 20


class KeyLocks:
    """A lock per key in use in this process, dropped when no thread holds or awaits it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, tuple[threading.Lock, list[int]]] = {}

    @contextmanager
    def held(self, key: Hashable) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if not users[0]:
                    del self._locks[key]


def coalesced_by(request: TaskRequest, task: Task) -> str:
    """Why an enqueue that created nothing was answered with ``task``: its
    ``idempotency_key``, its ``singleton`` key or its ``debounce`` key."""
    if request.debounce is not None:
        return "debounce"
    if request.idempotency_key is not None and task.idempotency_key == request.idempotency_key:
        return "idempotency_key"
    return "singleton"


class CoalescedEnqueue:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.keys = CoalescingKeys(store.schema)
        self._sql_singleton_holders = self.keys.holders_query(self.keys.singletons)
        self._sql_debounce_holders = self.keys.holders_query(self.keys.debounces)
        # A graph's singleton keys in one statement (one round trip, not one per task).
        self._sql_take_singletons = (
            sql.SQL(
                "INSERT INTO {} (task_type, key, task_id) "
                "SELECT r ->> 0, r ->> 1, (r ->> 2)::uuid FROM jsonb_array_elements(%s::jsonb) r"
            )
            .format(self.keys.singletons)
            .as_string(None)
        )
        self._submitting = KeyLocks()

    def try_enqueue(
        self,
        task: Task,
        inline: Sequence[Statement],
        request: TaskRequest,
        requester: Requester,
    ) -> Enqueued | None:
        """One try at the planned ``task`` (its keys rendered): ``None`` if it met a
        concurrent write and should be planned and tried again."""
        if task.singleton_key is not None:
            return self._singleton(task, task.singleton_key, inline)
        assert task.debounce_key is not None and request.debounce is not None
        return self._debounce(task, task.debounce_key, inline, request.debounce, requester)

    def _singleton(self, task: Task, key: str, inline: Sequence[Statement]) -> Enqueued | None:
        holder = self._holders(self._sql_singleton_holders, [(task.type_name, key)])
        if holder:
            return self.store.load(next(iter(holder.values()))), False, []
        taken = self.keys.singleton_taken(task.type_name, key, task.id)
        try:
            recorded = self.store.save(task, inline=[*inline, taken])
        except IntegrityError:
            return None  # another enqueue took the key first: look again
        return task, True, recorded

    def _debounce(
        self,
        task: Task,
        key: str,
        inline: Sequence[Statement],
        debounce: Debounce,
        requester: Requester,
    ) -> Enqueued | None:
        # One submission of a key at a time in this process: a burst from many threads
        # would otherwise lose its TaskDebounced saves to each other on the task's version.
        # Other nodes still race with it; a lost save looks again.
        with self._submitting.held((task.type_name, key)):
            try:
                return retry_on_conflict(
                    partial(self._debounce_once, task, key, inline, debounce, requester),
                    what=f"the debounce key {key!r}",
                    bound=DEBOUNCE_TRIES,
                )
            except KeptChanging:
                return None

    def _debounce_once(
        self,
        task: Task,
        key: str,
        inline: Sequence[Statement],
        debounce: Debounce,
        requester: Requester,
    ) -> Enqueued | None:
        """One look at the key's holder: debounce it, or make the key's new task. A holder
        started, or moved by another node, meanwhile fails its save (``IntegrityError``):
        ``retry_on_conflict`` looks again."""
        holder = self._debounce_holder(task.type_name, key)
        if holder is None or holder.state not in DEBOUNCEABLE_STATES or holder.attempts:
            return self._new_debounced(task, key, inline, holder)
        assert task.run_at is not None  # a debounce always sets it
        start = debounced_start(debounce, task.run_at, holder.created_on)
        holder.debounce(task.args, start, by=requester.principal, replace=debounce.mode == "last")
        self.store.save(holder)
        return holder, False, []

    def _new_debounced(
        self, task: Task, key: str, inline: Sequence[Statement], started: Task | None
    ) -> Enqueued | None:
        """The key's new task; the row of the task seen ``started`` (or ended) gives way."""
        replacing = None if started is None else started.id
        taken = self.keys.debounce_taken(task.type_name, key, task.id, replacing=replacing)
        try:
            recorded = self.store.save(task, inline=[*inline, *taken])
        except IntegrityError:
            return None  # another node made the key's new task first: look again
        return task, True, recorded

    def _debounce_holder(self, type_name: str, key: str) -> Task | None:
        found = self._holders(self._sql_debounce_holders, [(type_name, key)])
        holder_id = next(iter(found.values()), None)
        return None if holder_id is None else self.store.load(holder_id)

    def statements_for_graph(self, tasks: Sequence[Task]) -> list[Statement]:
        """The singleton keys of a graph's (or ``enqueue_in``'s) tasks, taken with them; a
        key named twice or held by a live task is refused, and so is a debounce."""
        keyed = [t for t in tasks if t.singleton_key is not None or t.debounce_key is not None]
        if not keyed:
            return []
        if any(t.debounce_key is not None for t in keyed):
            raise InvalidSubmission(
                "debounce coalesces one task at a time: submit it on its own "
                "(Ledger.enqueue, POST /v1/tasks), not in a graph or enqueue_in"
            )
        wanted = [(t.type_name, t.singleton_key or "") for t in keyed]
        if len(set(wanted)) != len(wanted):
            raise SingletonKeyTaken("a singleton key is named twice in this submission")
        for (type_name, key), holder in self._holders(self._sql_singleton_holders, wanted).items():
            raise SingletonKeyTaken(
                f"singleton key {key!r} of {type_name!r} is held by task {holder}"
            )
        if len(keyed) == 1:
            task = keyed[0]
            return [self.keys.singleton_taken(task.type_name, task.singleton_key or "", task.id)]
        rows = [[t.type_name, t.singleton_key or "", str(t.id)] for t in keyed]
        return [Statement(self._sql_take_singletons, (json.dumps(rows),))]

    def retaken(self, task: Task) -> list[Statement]:
        """The statement that takes a manually retried task's singleton key again, with the
        retry; ``SingletonKeyTaken`` while another task holds it (the retry would make a
        second live task of the key)."""
        key = task.singleton_key
        if key is None:
            return []
        for holder in self._holders(self._sql_singleton_holders, [(task.type_name, key)]).values():
            raise SingletonKeyTaken(
                f"cannot retry task {task.id}: its singleton key {key!r} is held by task {holder}"
            )
        return [self.keys.singleton_taken(task.type_name, key, task.id)]

    def _holders(
        self, query: sql.Composed, wanted: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], UUID]:
        types = [type_name for type_name, _ in wanted]
        keys = [key for _, key in wanted]
        with self.store.transaction() as cursor:
            rows = cursor.execute(query, (types, keys)).fetchall()
        return {(row["task_type"], row["key"]): row["task_id"] for row in rows}
