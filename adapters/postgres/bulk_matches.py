"""The tasks a bulk action matches, read from the task view on the primary: a task filter
(``task_queries.filter_conditions``), the states the action can change, and an enqueue-time
bound (the moment the action was asked for, so tasks enqueued later are left alone).

Counts, a sample, the kinds of task (type and adapter) among the matches for the role
check, and pages of ids in enqueue order by keyset, so a long action reads each match once
however the rows it already changed move meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql

from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.task_queries import TaskFilter, filter_conditions
from execution_ledger.domain.bulk import MatchedKind


class BulkMatches:
    """The matches of one filter, for the states an action changes."""

    def __init__(
        self,
        store: EventStore,
        where: TaskFilter,
        states: Iterable[str],
        enqueued_by: datetime,
    ) -> None:
        self.store = store
        self.table = sql.Identifier(store.schema, "task_view")
        self._params: list[Any] = []
        conditions = filter_conditions(where, self._params)
        conditions.append(sql.SQL("state = ANY(%s)"))
        self._params.append(sorted(states))
        conditions.append(sql.SQL("enqueued_at <= %s"))
        self._params.append(enqueued_by)
        self._where = sql.SQL(" AND ").join(conditions)

    def count(self) -> int:
        query = sql.SQL("SELECT count(*) AS n FROM {} WHERE {}").format(self.table, self._where)
        with self.store.transaction() as cur:
            row = cur.execute(query, self._params).fetchone()
        return int(row["n"]) if row else 0

    def kinds(self) -> list[MatchedKind]:
        query = sql.SQL(
            "SELECT DISTINCT type_name, adapter FROM {} WHERE {} ORDER BY type_name, adapter"
        ).format(self.table, self._where)
        with self.store.transaction() as cur:
            rows = cur.execute(query, self._params).fetchall()
        return [MatchedKind(r["type_name"], r["adapter"]) for r in rows]

    def page(self, after: tuple[datetime, UUID] | None, limit: int) -> list[tuple[datetime, UUID]]:
        """Up to ``limit`` matches after ``after`` in enqueue order, as (enqueued_at, id)."""
        params = list(self._params)
        where: sql.Composable = self._where
        if after is not None:
            where = sql.SQL("{} AND (enqueued_at, task_id) > (%s, %s)").format(where)
            params.extend(after)
        query = sql.SQL(
            "SELECT enqueued_at, task_id FROM {} WHERE {} ORDER BY enqueued_at, task_id LIMIT %s"
        ).format(self.table, where)
        with self.store.transaction() as cur:
            rows = cur.execute(query, (*params, limit)).fetchall()
        return [(r["enqueued_at"], r["task_id"]) for r in rows]

    def pages(self, size: int) -> Iterator[list[UUID]]:
        """Every match, ``size`` ids at a time (each page read when the last was used)."""
        after: tuple[datetime, UUID] | None = None
        while True:
            rows = self.page(after, size)
            if not rows:
                return
            yield [task_id for _, task_id in rows]
            if len(rows) < size:
                return
            after = rows[-1]
