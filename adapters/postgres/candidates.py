"""Choosing what a claim may start: due tasks of the dispatch queue within their queue,
lane and rate limits.

``read`` locks the claimed queues (a transaction-level advisory lock per queue, in sorted
order) and reads, in the same round trip, each queue's budget (its concurrency minus its
running attempts; 0 while paused) and its candidates with their stored events;
``within_limits`` takes them in order while budgets, lane limits and rate limits
(``rate_limits.py``, when given the round's ``RoundRates``) last.

The queue lock is exclusive only where a queue's limit could be reached. A queue's *reach*
is the concurrency of every worker node seen in the last ``COUNTED_WHILE`` (``worker_nodes``,
whose ``last_seen`` each node renews every second; a node's running and claimed attempts
never exceed its concurrency, as its rounds run one at a time) plus the attempts running
there for any other worker. While the reach is within the queue's concurrency and the
claiming worker itself was seen in the last ``SHARED_WHILE``, no set of concurrent claims
can pass the limit, so claims take the lock shared and run side by side (two nodes on one
queue no longer take turns). A node not seen for ``SHARED_WHILE`` claims under the
exclusive lock, so the rows of nodes long gone stop counting without a node's shared claim
ever going uncounted (unless it stalls for the nine minutes between the two inside one
claim). Otherwise, and for queues a rate limit may cover, the lock is exclusive:
it waits for the shared holders, and its budget counts what they started. Each round reads
the reach under its lock and chooses the mode of the next; a round that took the shared lock
and finds the reach past the limit (a node just registered) starts nothing from that queue
(``QueueReading.missed``) and the claim reads it again under the exclusive lock. Lane limits
need no exclusive lock: a lane offers only its oldest due task and the candidates are row
locked (``SKIP LOCKED``), so concurrent claims never start two tasks of one lane.

A queue with a ``fair_key`` offers its candidates in turns across its keys: within a
priority, each key's oldest task first, then each key's second, and so on, so one key's
backlog does not starve another key's few tasks (``fair_candidates.py``).
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
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
SHARED_WHILE = "1 minute"  # a worker seen this recently may lock a queue shared
COUNTED_WHILE = "10 minutes"  # a worker seen this recently counts in a queue's reach


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
    missed: frozenset[str] = frozenset()  # read under a shared lock that did not suffice


class CandidateReader:
    def __init__(self, store: EventStore, registry: Registry, tables: RunningTables) -> None:
        self.store = store
        self.registry = registry
        self.tables = tables
        # Each queue's running attempts are read once, for its budget and for the part of
        # its reach that no node seen lately counts, by ``ledger_queue_running``
        # (``running.py``: it keeps an index scan over rows that churn with every attempt).
        self._sql_budgets = (
            sql.SQL(
                "SELECT q AS queue, "
                "coalesce((SELECT f.paused FROM {flags} AS f WHERE f.queue = q), false) AS paused, "
                "r.running, "
                "(SELECT coalesce(sum(w.concurrency), 0) FROM {workers} AS w "
                " WHERE w.last_seen > now() - {counted}::interval) + r.uncounted AS reach, "
                "EXISTS (SELECT 1 FROM {workers} AS w WHERE w.worker = %s "
                "        AND w.last_seen > now() - {shared}::interval) AS registered "
                "FROM unnest(%s::text[]) AS q, {queue_running}(q, {counted}::interval) AS r"
            )
            .format(
                flags=self.tables.flags,
                queue_running=self.tables.queue_running,
                workers=self.tables.workers,
                counted=sql.Literal(COUNTED_WHILE),
                shared=sql.Literal(SHARED_WHILE),
            )
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
        self._sql_share_queue = "SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, 0))"
        # Queues whose last reading found their limit out of reach: locked shared next time.
        self._shared: set[str] = set()

    @property
    def unbound(self) -> frozenset[str]:
        """The queues whose limit the last reading found out of reach of every registered
        node (their next lock is shared)."""
        return frozenset(self._shared)

    def read(
        self,
        cur: psycopg.Cursor[Any],
        queues: list[str],
        limit: int,
        worker: str,
        passed_over: Mapping[str, list[str]] | None = None,
        first: Sequence[Statement] = (),
        exclusive: Container[str] = (),
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
        keys in ``passed_over`` (full rate-limit buckets) offer no candidates. Queues in
        ``exclusive`` (a rate limit may cover them) always take the exclusive lock.
        """
        passed_over = passed_over or {}
        conn = cur.connection
        shared = {q for q in queues if q in self._shared and q not in exclusive}
        with batched(conn):
            for queue in queues:  # in sorted order: no deadlock between nodes
                lock = self._sql_share_queue if queue in shared else self._sql_lock_queue
                cur.execute(lock, (f"{self.store.schema}:claim:{queue}",))
            run_inline(cur, first)
            # Each statement below starts after the locks are held (a new snapshot in READ
            # COMMITTED), so it counts the running attempts of every earlier claim.
            budget_cur = conn.cursor().execute(self._sql_budgets, (worker, queues))
            queue_curs = [
                conn.cursor().execute(
                    *self._candidates_query(queue, limit, passed_over.get(queue, []))
                )
                for queue in queues
            ]
        flags = budget_cur.fetchall()
        paused = frozenset(r["queue"] for r in flags if r["paused"])
        missed = self._choose_locks(flags, shared, exclusive)
        budgets = {
            r["queue"]: 0
            if r["paused"] or r["queue"] in missed
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
        return QueueReading(budgets, chosen, events, exhausted - missed, paused, missed)

    def _choose_locks(
        self, flags: list[dict[str, Any]], shared: set[str], exclusive: Container[str]
    ) -> frozenset[str]:
        """Remember, per queue, whether its next lock may be shared (its reach within its
        concurrency, this worker registered, no rate limit); return the queues locked
        shared this time that should not have been."""
        missed = set()
        for row in flags:
            queue = row["queue"]
            out_of_reach = (
                row["registered"]
                and queue not in exclusive
                and row["reach"] <= self.registry.queue(queue).concurrency
            )
            if out_of_reach:
                self._shared.add(queue)
                continue
            self._shared.discard(queue)
            if queue in shared:
                missed.add(queue)
        return frozenset(missed)

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

