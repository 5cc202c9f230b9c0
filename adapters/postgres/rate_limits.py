"""Rate limits at claim time: the recent starts of each bucket, counted exactly across nodes,
and the tasks a limit holds back, with the reason users see.

Two operational tables (derivable from the log's ``TaskStarted`` events and the registry,
like ``running_attempts``):

- ``rate_limit_starts``: one row per start a limit counts (limit name, bucket key, time),
  inserted in the claim's transaction; rows older than the limit's period are pruned when
  the bucket is next read.
- ``rate_limit_holds``: for the candidates a claim held back, the limit, its bucket, the
  reason and when the bucket's next slot opens (one row per task, at most the candidates
  of a round); the task queries join it (``held_by``). Deleted when the task starts; a
  row of a task that left the queue otherwise is dropped by the next round that writes
  holds.

Exactness: a claim reads a bucket's count only after it took the bucket's transaction
advisory lock (``<schema>:rate:<name>:<key>``), in a statement that starts after the lock is
held, and inserts its starts before it commits; so claims on every node count every start
committed before theirs. The lock is *tried* (``pg_try_advisory_xact_lock``): a bucket
another claim holds at that moment is skipped this round (no wait, no deadlock); its tasks
are left for the next round. One round trip reads all the round's buckets (lock, prune,
count, pipelined); none is made when no limit covers the candidates, and none for buckets
this process already saw full until their next slot (a full bucket stays full until then:
other nodes can only add starts).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from psycopg import sql

from execution_ledger.adapters.postgres.one_trip import batched
from execution_ledger.domain.rate_limits import RateLimit, limits_covering
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.task import Task

STARTS = "rate_limit_starts"
HOLDS = "rate_limit_holds"
_MAX_REMEMBERED = 10_000  # holds written and buckets seen full, kept by one process

_CREATE = """
CREATE TABLE IF NOT EXISTS {starts} (
    name text NOT NULL,
    key text NOT NULL,
    started_at timestamptz NOT NULL,
    task_id uuid NOT NULL
);
CREATE INDEX IF NOT EXISTS rate_limit_starts_bucket_idx ON {starts} (name, key, started_at);
CREATE TABLE IF NOT EXISTS {holds} (
    task_id uuid PRIMARY KEY,
    name text NOT NULL,
    key text NOT NULL,
    reason text NOT NULL,
    next_slot timestamptz,
    noted_at timestamptz NOT NULL
);
"""

_TRY_LOCKS = """
SELECT b.name, b.key,
       pg_try_advisory_xact_lock(hashtextextended(%s || b.name || ':' || b.key, 0)) AS locked
FROM json_to_recordset(%s::json) AS b(name text, key text)
"""

_PRUNE = """
DELETE FROM {starts} AS s USING json_to_recordset(%s::json) AS b(name text, key text, p float8)
WHERE s.name = b.name AND s.key = b.key AND s.started_at <= now() - b.p * interval '1 second'
"""

# ``nth``: the limit-th most recent start in the window (when the bucket is full, the next
# slot opens one period after it); ``oldest``: the first start in the window.
_COUNT = """
SELECT b.name, b.key, now() AS now, w.used, w.oldest,
       (SELECT s.started_at FROM {starts} AS s
        WHERE s.name = b.name AND s.key = b.key AND s.started_at > now() - b.p * interval '1 second'
        ORDER BY s.started_at DESC OFFSET b.lim - 1 LIMIT 1) AS nth
FROM json_to_recordset(%s::json) AS b(name text, key text, p float8, lim integer)
CROSS JOIN LATERAL (
    SELECT count(*) AS used, min(s.started_at) AS oldest FROM {starts} AS s
    WHERE s.name = b.name AND s.key = b.key AND s.started_at > now() - b.p * interval '1 second'
) AS w
"""

_INSERT_STARTS = """
WITH unheld AS (
    DELETE FROM {holds} WHERE task_id = ANY(string_to_array(%s, ',')::uuid[])
)
INSERT INTO {starts} (name, key, started_at, task_id)
SELECT name, key, now(), task_id
FROM json_to_recordset(%s::json) AS r(name text, key text, task_id uuid)
"""

_WRITE_HOLDS = """
WITH gone AS (
    DELETE FROM {holds} AS h WHERE NOT EXISTS (
        SELECT 1 FROM {queue} AS q
        WHERE q.task_id = h.task_id AND q.state IN ('ready', 'scheduled'))
)
INSERT INTO {holds} (task_id, name, key, reason, next_slot, noted_at)
SELECT task_id, name, key, reason, next_slot, now()
FROM json_to_recordset(%s::json) AS r(
    task_id uuid, name text, key text, reason text, next_slot timestamptz)
ON CONFLICT (task_id) DO UPDATE SET name = excluded.name, key = excluded.key,
    reason = excluded.reason, next_slot = excluded.next_slot, noted_at = excluded.noted_at
"""

# A hold whose next slot has passed is not shown: the next claim that reads the task starts
# it, or holds it again with a new reason.
_HOLDS_OF = """
SELECT h.task_id, h.reason FROM {holds} AS h
WHERE h.task_id = ANY(%s::uuid[]) AND (h.next_slot IS NULL OR h.next_slot > now())
"""


class Bucket(NamedTuple):
    """One limit's counter for one key ("" when the limit has no key template)."""

    limit: RateLimit
    key: str


@dataclass
class BucketCount:
    used: int  # starts in the window, this round's included
    now: datetime  # the database's time of the count
    oldest: datetime | None  # the first start in the window
    nth: datetime | None  # the limit-th most recent start (set when the bucket was full)

    def next_slot(self, period: float) -> datetime:
        """When one more start fits (meaningful once the bucket is full)."""
        anchor = self.nth or self.oldest or self.now
        return anchor + timedelta(seconds=period)


@dataclass(frozen=True)
class Hold:
    bucket: Bucket
    next_slot: datetime

    def reason(self) -> str:
        """``rate limit per_tenant (tenant:a): 10 per 1h, next slot at 2026-…Z``."""
        limit = self.bucket.limit
        key = f" ({self.bucket.key})" if self.bucket.key else ""
        slot = self.next_slot.isoformat(timespec="seconds")
        return f"rate limit {limit.name}{key}: {limit.describe()}, next slot at {slot}"


@dataclass
class RoundRates:
    """One claim round's view of the buckets its candidates count in: ``admit`` takes a
    slot in each of a task's buckets or says why not."""

    buckets: Mapping[UUID, list[Bucket]]
    counts: dict[Bucket, BucketCount]
    full_until: Mapping[Bucket, datetime] = field(default_factory=dict)  # seen full before
    held: dict[UUID, Hold] = field(default_factory=dict)

    def admit(self, task_id: UUID) -> bool:
        buckets = self.buckets.get(task_id, [])
        for bucket in buckets:
            if bucket in self.full_until:
                self.held[task_id] = Hold(bucket, self.full_until[bucket])
                return False
            count = self.counts.get(bucket)
            if count is None:
                return False  # another claim holds the bucket right now: next round
            if count.used >= bucket.limit.limit:
                self.held[task_id] = Hold(bucket, count.next_slot(bucket.limit.period))
                return False
        for bucket in buckets:
            self.counts[bucket].used += 1
        return True

    def release(self, task_id: UUID) -> None:
        """Give back the slots of an admitted task that did not start after all."""
        for bucket in self.buckets.get(task_id, []):
            if bucket in self.counts:
                self.counts[bucket].used -= 1

    def now_full(self) -> dict[Bucket, datetime]:
        """The buckets this round left full, with their next slot."""
        return {
            bucket: count.next_slot(bucket.limit.period)
            for bucket, count in self.counts.items()
            if count.used >= bucket.limit.limit
        }


class ClaimRateLimits:
    """The rate limits of the dispatcher's registry, as a claim applies them (one per
    dispatcher). ``registry`` gives the registry the dispatcher runs now: a node that takes
    a new registry version between rounds applies its limits from the next round."""

    def __init__(
        self, schema: str, registry: Callable[[], Registry], queue_table: sql.Identifier
    ) -> None:
        self.registry = registry
        self.schema = schema
        self.starts = sql.Identifier(schema, STARTS)
        self.holds = sql.Identifier(schema, HOLDS)
        self._sql_prune = sql.SQL(_PRUNE).format(starts=self.starts).as_string(None)
        self._sql_count = sql.SQL(_COUNT).format(starts=self.starts).as_string(None)
        self._sql_insert = (
            sql.SQL(_INSERT_STARTS).format(starts=self.starts, holds=self.holds).as_string(None)
        )
        self._sql_holds = (
            sql.SQL(_WRITE_HOLDS).format(holds=self.holds, queue=queue_table).as_string(None)
        )
        self._full: dict[Bucket, datetime] = {}  # buckets seen full, until their next slot
        self._written: dict[UUID, str] = {}  # the hold reason last written per task

    def active_for(self, queues: Iterable[str]) -> bool:
        """Whether any limit may cover a task of these queues (none: the claim skips it all)."""
        limits = self.registry().rate_limits.values()
        wanted = set(queues)
        return any(limit.queue is None or limit.queue in wanted for limit in limits)

    def full_fair_keys(self, queues: Iterable[str], now: datetime) -> dict[str, list[str]]:
        """Per fair queue, the keys whose tasks need not be read: buckets seen full until
        later than ``now`` of a limit that covers every task of the queue (no task type;
        that queue or any) and is keyed by the queue's own ``fair_key`` template."""
        registry = self.registry()
        passed_over: dict[str, list[str]] = {}
        for queue in queues:
            template = registry.queue(queue).fair_key
            if template is None:
                continue
            keys = sorted(
                bucket.key
                for bucket, slot in self._full.items()
                if slot > now
                and bucket.limit.key == template
                and bucket.limit.task_type is None
                and bucket.limit.queue in (None, queue)
            )
            if keys:
                passed_over[queue] = keys
        return passed_over

    def buckets_of(self, task: Task) -> list[Bucket]:
        """The buckets a task counts in: each covering limit whose key its args can fill."""
        buckets = []
        for limit in limits_covering(self.registry().rate_limits, task.type_name, task.queue):
            key = limit.bucket(task.args)
            if key is not None:  # args lacking a field: enqueued before the limit existed
                buckets.append(Bucket(limit, key))
        return buckets

    def read(
        self, cur: psycopg.Cursor[Any], buckets: Mapping[UUID, list[Bucket]], now: datetime
    ) -> RoundRates:
        """Lock, prune and count the round's buckets (one round trip; none when every
        bucket is known full until later than ``now``)."""
        self._full = {b: slot for b, slot in self._full.items() if slot > now}
        wanted = sorted(
            {b for bs in buckets.values() for b in bs if b not in self._full},
            key=lambda b: (b.limit.name, b.key),
        )
        if not wanted:
            return RoundRates(buckets, {}, dict(self._full))
        rows = [
            {"name": b.limit.name, "key": b.key, "p": b.limit.period, "lim": b.limit.limit}
            for b in wanted
        ]
        payload = json.dumps(rows)
        conn = cur.connection
        with batched(conn):
            lock_cur = conn.cursor().execute(_TRY_LOCKS, (f"{self.schema}:rate:", payload))
            conn.cursor().execute(self._sql_prune, (payload,))
            count_cur = conn.cursor().execute(self._sql_count, (payload,))
        locked = {(r["name"], r["key"]) for r in lock_cur.fetchall() if r["locked"]}
        by_name = {(b.limit.name, b.key): b for b in wanted}
        counts = {
            by_name[(r["name"], r["key"])]: BucketCount(r["used"], r["now"], r["oldest"], r["nth"])
            for r in count_cur.fetchall()
            if (r["name"], r["key"]) in locked
        }
        return RoundRates(buckets, counts, dict(self._full))

    def record(
        self, cur: psycopg.Cursor[Any], rates: RoundRates, started: Sequence[UUID]
    ) -> None:
        """In the claim's transaction (nothing waited for in a pipeline): a start row per
        bucket of each started task (their holds deleted), and the holds of the candidates
        held back whose reason changed. ``committed`` follows once it commits."""
        rows = [
            {"name": b.limit.name, "key": b.key, "task_id": str(task_id)}
            for task_id in started
            for b in rates.buckets.get(task_id, [])
        ]
        if rows:
            ids = ",".join(str(task_id) for task_id in started)
            cur.connection.cursor().execute(self._sql_insert, (ids, json.dumps(rows)))
        changed = self._changed_holds(rates.held)
        if changed:
            cur.connection.cursor().execute(self._sql_holds, (json.dumps(changed),))

    def committed(self, rates: RoundRates, started: Sequence[UUID]) -> None:
        """Remember, once the round committed, the buckets it left full and the holds it
        wrote (so the next rounds skip both)."""
        for task_id in started:
            self._written.pop(task_id, None)
        if len(self._written) > _MAX_REMEMBERED:
            self._written.clear()
        self._written.update((task_id, hold.reason()) for task_id, hold in rates.held.items())
        self._full.update(rates.now_full())
        if len(self._full) > _MAX_REMEMBERED:
            self._full.clear()

    def _changed_holds(self, held: Mapping[UUID, Hold]) -> list[dict[str, Any]]:
        changed = {
            task_id: hold.reason()
            for task_id, hold in held.items()
            if self._written.get(task_id) != hold.reason()
        }
        rows = [
            {
                "task_id": str(task_id),
                "name": held[task_id].bucket.limit.name,
                "key": held[task_id].bucket.key,
                "reason": reason,
                "next_slot": held[task_id].next_slot.isoformat(),
            }
            for task_id, reason in changed.items()
        ]
        return rows


def create_statement(schema: str) -> sql.Composed:
    return sql.SQL(_CREATE).format(
        starts=sql.Identifier(schema, STARTS), holds=sql.Identifier(schema, HOLDS)
    )


def holds_of(cur: psycopg.Cursor[Any], schema: str, task_ids: Sequence[UUID]) -> dict[UUID, str]:
    """The reason each of these tasks is held back by a rate limit (those that are)."""
    if not task_ids:
        return {}
    query = sql.SQL(_HOLDS_OF).format(holds=sql.Identifier(schema, HOLDS))
    rows = cur.execute(query, ([str(t) for t in task_ids],)).fetchall()
    return {row["task_id"]: row["reason"] for row in rows}


def with_holds(cur: psycopg.Cursor[Any], schema: str, rows: list[dict[str, Any]]) -> None:
    """Set ``held_by`` on task-view rows: the rate-limit reason of a task waiting to start
    (ready or scheduled), else None."""
    waiting = [row["task_id"] for row in rows if row.get("state") in ("ready", "scheduled")]
    holds = holds_of(cur, schema, waiting)
    for row in rows:
        row["held_by"] = holds.get(row["task_id"])
