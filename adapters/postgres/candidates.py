"""Choosing what a claim may start: due tasks of the dispatch queue within their queue,
lane and rate limits.

``read`` locks the claimed queues (a transaction-level advisory lock per queue, in sorted
order, so queue and lane limits hold across nodes) and reads, in the same round trip, each
queue's budget (its concurrency minus its running attempts; 0 while paused) and its
candidates with their stored events; ``within_limits`` takes them in order while budgets,
lane limits and rate limits (``rate_limits.py``, when given the round's ``RoundRates``) last.

A queue with a ``fair_key`` offers its candidates in turns across its keys: within a
priority, each key's oldest task first, then each key's second, and so on, so one key's
backlog does not starve another key's few tasks (``fair_candidates.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from psycopg import sql

from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.fair_candidates import KEYLESS_WINDOW, fair_candidates_query
from execution_ledger.adapters.postgres.one_trip import batched
from execution_ledger.adapters.postgres.rate_limits import RoundRates
from execution_ledger.adapters.postgres.recorder import Statement, run_inline
from execution_ledger.adapters.postgres.running import RunningTables
from execution_ledger.domain.registry import Registry

SPARE_CANDIDATES = 10  # read beyond the free slots, for lane limits


@dataclass(frozen=True)
class Candidate:
    task_id: UUID
    queue: str
    lane: str | None
    turn: int = 1  # a fair queue's round in which its key offers this task


class QueueReading(NamedTuple):
    budgets: dict[str, int]  # queue -> attempts it may still start (0: paused or full)
    candidates: list[Candidate]
    events: dict[UUID, list[dict[str, Any]]]  # each candidate's stored events, in order
    exhausted: frozenset[str]  # queues whose due tasks were all read
    paused: frozenset[str] = frozenset()  # queues paused when they were read


class CandidateReader:
    def __init__(self, store: EventStore, registry: Registry, tables: RunningTables) -> None:
        self.store = store
        self.registry = registry
        self.tables = tables
        self._sql_budgets = (
            sql.SQL(
                "SELECT q AS queue, "
                "coalesce((SELECT f.paused FROM {flags} AS f WHERE f.queue = q), false) AS paused, "
                "(SELECT count(*) FROM {running} AS r WHERE r.queue = q) AS running "
                "FROM unnest(%s::text[]) AS q"
            )
            .format(flags=self.tables.flags, running=self.tables.running)
            .as_string(None)
        )
        # The candidates of one queue, each with its stored events (so the tasks need no
        # second query): one row per event, a task's events in version order. A lane
        # offers only its oldest due task.
        self._sql_candidates = (
            sql.SQL(
                "WITH c AS ("
                "SELECT q.task_id, q.queue, q.lane, q.priority, q.seq "
                "FROM {queue} AS q WHERE q.queue = %s "
                "AND q.state IN ('ready', 'scheduled') AND (q.run_at IS NULL OR q.run_at <= now()) "
                "AND (q.lane IS NULL OR NOT EXISTS ("
                "  SELECT 1 FROM {queue} AS e WHERE e.lane = q.lane AND e.seq < q.seq "
                "  AND e.state IN ('ready', 'scheduled') "
                "  AND (e.run_at IS NULL OR e.run_at <= now()))) "
                "ORDER BY q.priority DESC, q.seq LIMIT %s "
                "FOR UPDATE OF q SKIP LOCKED) "
                "SELECT c.task_id, c.queue, c.lane, c.priority, c.seq, 1 AS turn, "
                "v.originator_id, v.originator_version, v.topic, v.state "
                "FROM c JOIN {events} AS v ON v.originator_id = c.task_id "
                "ORDER BY c.priority DESC, c.seq, v.originator_version"
            )
            .format(queue=store.dispatch_queue.table, events=store.table)
            .as_string(None)
        )
        self._sql_fair_candidates = fair_candidates_query(store.dispatch_queue.table, store.table)
        self._sql_lock_queue = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"

    def read(
        self,
        cur: psycopg.Cursor[Any],
        queues: list[str],
        limit: int,
        passed_over: Mapping[str, list[str]] | None = None,
        first: Sequence[Statement] = (),
    ) -> QueueReading:
        """Lock the queues, run ``first`` (a round's ended attempts leave
        ``running_attempts``), then read their budgets and candidates, in one round trip.

        Returns the budgets, up to ``limit`` candidates of the open queues (priority, then
        enqueue order; a lane offers only its oldest due task), each candidate's stored
        events, and the queues whose due tasks were all read (fewer than ``limit``). One
        candidate query per queue: with ``queue = %s`` the index yields rows already in
        order and the LIMIT stops the scan (with ``= ANY`` Postgres sorted every ready
        task). Queues are read before their budgets are known (to save the round
        trip); the candidates of a full or paused queue are dropped here. A fair queue's
        keys in ``passed_over`` (full rate-limit buckets) offer no candidates.
        """
        passed_over = passed_over or {}
        conn = cur.connection
        with batched(conn):
            for queue in queues:  # in sorted order: no deadlock between nodes
                cur.execute(self._sql_lock_queue, (f"{self.store.schema}:claim:{queue}",))
            run_inline(cur, first)
            # Each statement below starts after the locks are held (a new snapshot in READ
            # COMMITTED), so it counts the running attempts of every earlier claim.
            budget_cur = conn.cursor().execute(self._sql_budgets, (queues,))
            queue_curs = [
                conn.cursor().execute(
                    *self._candidates_query(queue, limit, passed_over.get(queue, []))
                )
                for queue in queues
            ]
        flags = budget_cur.fetchall()
        paused = frozenset(r["queue"] for r in flags if r["paused"])
        budgets = {
            r["queue"]: 0
            if r["paused"]
            else self.registry.queue(r["queue"]).concurrency - r["running"]
            for r in flags
        }
        per_queue = {queue: c.fetchall() for queue, c in zip(queues, queue_curs, strict=True)}
        exhausted = frozenset(
            queue
            for queue, queue_rows in per_queue.items()
            if len({r["task_id"] for r in queue_rows}) < limit and not passed_over.get(queue)
        )
        rows = [r for rs in per_queue.values() for r in rs if budgets.get(r["queue"], 0) > 0]
        events: dict[UUID, list[dict[str, Any]]] = {}
        ranked: list[tuple[int, int, int, Candidate]] = []
        for r in rows:
            if r["task_id"] not in events:
                events[r["task_id"]] = []
                candidate = Candidate(r["task_id"], r["queue"], r["lane"], r["turn"])
                ranked.append((-r["priority"], r["turn"], r["seq"], candidate))
            events[r["task_id"]].append(r)
        ranked.sort(key=lambda entry: entry[:3])
        chosen = [candidate for *_, candidate in ranked[:limit]]
        return QueueReading(budgets, chosen, events, exhausted, paused)

    def _candidates_query(
        self, queue: str, limit: int, passed_over: list[str]
    ) -> tuple[str, Any]:
        """A queue's candidate query and its parameters (a fair queue's takes turns)."""
        if self.registry.queue(queue).fair_key is None:
            return self._sql_candidates, (queue, limit)
        return self._sql_fair_candidates, {
            "queue": queue,
            "limit": limit,
            "keyless_window": KEYLESS_WINDOW,
            "passed_over": passed_over,
        }

    def within_limits(
        self,
        cur: psycopg.Cursor[Any],
        candidates: list[Candidate],
        budgets: dict[str, int],
        limit: int,
        rates: RoundRates | None = None,
    ) -> list[Candidate]:
        """The candidates to start, in order, within their queue's budget, their lane's
        limit and (with ``rates``) a slot in each of their rate limits' buckets."""
        lanes = sorted({c.lane for c in candidates if c.lane is not None})
        lane_running: dict[str, int] = {}
        if lanes:
            cur.execute(
                sql.SQL(
                    "SELECT lane, count(*) AS running FROM {} WHERE lane = ANY(%s) GROUP BY lane"
                ).format(self.tables.running),
                (lanes,),
            )
            lane_running = {row["lane"]: row["running"] for row in cur.fetchall()}
        budgets = dict(budgets)
        chosen: list[Candidate] = []
        for candidate in candidates:
            if len(chosen) == limit or budgets[candidate.queue] <= 0:
                continue
            lane = candidate.lane
            if lane is not None and lane_running.get(lane, 0) >= self.registry.lane_limit(lane):
                continue
            if rates is not None and not rates.admit(candidate.task_id):
                continue
            if candidate.lane is not None:
                lane_running[candidate.lane] = lane_running.get(candidate.lane, 0) + 1
            budgets[candidate.queue] -= 1
            chosen.append(candidate)
        return chosen

