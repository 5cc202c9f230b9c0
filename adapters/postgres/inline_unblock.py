"""Unblocking dependents in the transaction that records their last dependency's success.

When a worker records ``TaskSucceeded`` for some tasks, the blocked tasks waiting on them
are found in the dispatch queue (``depends_on`` of its blocked rows, a GIN index); those
whose every dependency has now succeeded get their ``TaskUnblocked`` appended in the same
transaction, so a dependent is claimable the moment its dependency's success commits: a
chain hop costs one worker round, not a round trip through the readiness projection. The
rule (all dependencies succeeded) and its event are ``domain/dependencies.py``'s
(``freed_by_successes``, ``unblock``); this module holds only the two reads.

The readiness graph's dependency cascade stays the rule that always applies: it skips the
dependents of a task that ended otherwise, and it unblocks what this could not see (a
dependent whose enqueue committed while the success was being recorded). It acts only on
tasks still at the version it saw, so a task unblocked here is never unblocked twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.recorder import id_list
from execution_ledger.domain.dependencies import freed_by_successes, unblock
from execution_ledger.domain.task import Task, event_name


class InlineUnblock:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        queue = store.dispatch_queue.table
        self._sql_dependents = (
            sql.SQL(
                "SELECT task_id, depends_on FROM {} WHERE state = 'blocked' "
                "AND depends_on && string_to_array(%s, ',')::uuid[]"
            )
            .format(queue)
            .as_string(None)
        )
        self._sql_last_events = (
            sql.SQL(
                "SELECT DISTINCT ON (originator_id) originator_id, topic FROM {} "
                "WHERE originator_id = ANY(string_to_array(%s, ',')::uuid[]) "
                "ORDER BY originator_id, originator_version DESC"
            )
            .format(store.table)
            .as_string(None)
        )

    def look_up(
        self, conn: psycopg.Connection[Any], succeeded: Sequence[UUID]
    ) -> psycopg.Cursor[Any] | None:
        """Send the query for the blocked dependents of ``succeeded`` (tasks whose success
        is being recorded in ``conn``'s transaction); in pipeline mode it rides along with
        the claim's reads. None when nothing succeeded."""
        if not succeeded:
            return None
        return conn.cursor().execute(self._sql_dependents, (id_list(succeeded),))

    def unblocked_by(
        self,
        cur: psycopg.Cursor[Any],
        dependents: psycopg.Cursor[Any] | None,
        succeeded: Sequence[UUID],
        now: datetime,
    ) -> list[Task]:
        """Of the dependents ``look_up`` found, those now free to run, with
        ``TaskUnblocked`` pending."""
        rows = dependents.fetchall() if dependents is not None else []
        if not rows:
            return []
        now_done = set(succeeded)
        others = {d for row in rows for d in row["depends_on"]} - now_done
        # Only successes are looked up: a dependency that ended otherwise reads as not ended
        # here, and its skip is the cascade's.
        free = freed_by_successes(
            ((row["task_id"], row["depends_on"]) for row in rows),
            now_done | self._already_succeeded(cur, others),
        )
        if not free:
            return []
        return unblock(self.store.load_many(free, cur).values(), now)

    def _already_succeeded(self, cur: psycopg.Cursor[Any], task_ids: set[UUID]) -> set[UUID]:
        if not task_ids:
            return set()
        cur.execute(self._sql_last_events, (id_list(task_ids),))
        return {
            row["originator_id"]
            for row in cur.fetchall()
            if event_name(row["topic"]) == "TaskSucceeded"
        }
