"""Finding and recording fired timeouts: the watchdog's side of the store.

- heartbeat: a running attempt whose lease was not renewed (its worker died or hung);
- start_to_close: a running attempt past its deadline that its own worker did not end
  (the worker normally records this itself; this is the backstop, after a grace period);
- schedule_to_start: a ready task not started in time;
- schedule_to_close: a task past its overall deadline, whatever it is doing;
- signal_wait: a task still waiting for a signal its type needs, longer than allowed (from
  the task view: when it began to wait, and its timeouts).

Whether a timeout found still holds, and what it records, is ``domain/watchdog.py``'s;
this module holds the named queries that find them and the save. A task that ends here and
is an awaited child tells its parent in the same save (``domain/children.py``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from datetime import datetime

from eventsourcing.persistence import IntegrityError
from psycopg import sql

from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.recorder import Statement
from execution_ledger.adapters.postgres.running import RunningTables
from execution_ledger.domain.children import notify_parents
from execution_ledger.domain.timeouts import TimeoutKind
from execution_ledger.domain.watchdog import (
    BROADEST_FIRST,
    FiredTimeout,
    one_per_task,
    record_fired,
)

log = logging.getLogger(__name__)
BACKSTOP_GRACE_SECONDS = 5.0

# What each kind finds: (task_id, attempt) rows, at most %s of them.
_FIRED_QUERIES = {
    TimeoutKind.HEARTBEAT: (
        "SELECT task_id, attempt FROM {running} WHERE lease_expires_at < now() "
        "ORDER BY lease_expires_at LIMIT %s"
    ),
    TimeoutKind.START_TO_CLOSE: (
        "SELECT task_id, attempt FROM {running} WHERE close_deadline < now() - "
        f"interval '{BACKSTOP_GRACE_SECONDS} seconds' ORDER BY close_deadline LIMIT %s"
    ),
    TimeoutKind.SCHEDULE_TO_START: (
        "SELECT task_id, NULL AS attempt FROM {nodes} WHERE schedule_to_start IS NOT NULL "
        "AND state IN ('scheduled', 'ready') "
        "AND due_at + schedule_to_start * interval '1 second' < now() LIMIT %s"
    ),
    TimeoutKind.SCHEDULE_TO_CLOSE: (
        "SELECT task_id, NULL AS attempt FROM {nodes} WHERE deadline < now() "
        "AND state IN ('blocked', 'scheduled', 'ready', 'running') LIMIT %s"
    ),
    TimeoutKind.SIGNAL_WAIT: (
        "SELECT task_id, NULL AS attempt FROM {view} WHERE state = 'waiting' "
        "AND signal_wait_since IS NOT NULL AND timeouts ? 'signal_wait' "
        "AND signal_wait_since + (timeouts->>'signal_wait')::float8 * interval '1 second'"
        " < now() LIMIT %s"
    ),
}


class PostgresTimeouts:
    def __init__(
        self,
        store: EventStore,
        clock: Callable[[], datetime],
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.clock = clock
        self.jitter = jitter
        self.tables = RunningTables(store.schema)
        self.nodes = sql.Identifier(store.schema, "readiness_nodes")
        self.view = sql.Identifier(store.schema, "task_view")
        self._sql_fired = {
            kind: sql.SQL(query)
            .format(running=self.tables.running, nodes=self.nodes, view=self.view)
            .as_string(None)
            for kind, query in _FIRED_QUERIES.items()
        }

    def fired(self, limit: int = 200) -> list[FiredTimeout]:
        """The timeouts that fired, at most ``limit`` of each kind, one per task."""
        found: list[FiredTimeout] = []
        with self.store.transaction() as cur:
            for kind in BROADEST_FIRST:
                rows = cur.execute(self._sql_fired[kind], (limit,)).fetchall()
                found.extend(FiredTimeout(row["task_id"], kind, row["attempt"]) for row in rows)
        return one_per_task(found)

    def record(self, timeouts: Sequence[FiredTimeout]) -> int:
        """Append ``TaskTimedOut`` (and retries) for those still true; return how many."""
        recorded = 0
        for timeout in timeouts:
            try:
                recorded += self._record_one(timeout)
            except IntegrityError:
                # Not retried here: the next watchdog round finds it again if it still holds.
                log.debug(
                    "timeout of %s met a concurrent write; it is checked again next time",
                    timeout.task_id,
                )
        return recorded

    def _record_one(self, timeout: FiredTimeout) -> int:
        task = self.store.load(timeout.task_id)
        decided = record_fired(task, timeout, self.clock(), self.jitter)
        if decided is None:
            return 0
        inline: list[Statement] = []
        if decided.stopped_attempt:
            inline = self.tables.attempts_stopped([task.id])
        parents = notify_parents([task], self.store.load_many)
        self.store.save(task, *parents, inline=inline)
        log.info("task %s timed out (%s)", task.id, timeout.kind.value)
        return 1
