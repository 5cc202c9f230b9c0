"""Operational tables kept in step with the events, in the same transactions:

- ``running_attempts``: one row per attempt in flight, with its worker and lease. Inserted
  with ``TaskStarted``, deleted with the event that ends the attempt. Queue and lane limits
  count these rows, leases expire here, and the watchdog reads them.
- ``worker_nodes``: each worker process, its queues and when it was last seen.
- ``queue_flags``: paused queues.

They can be derived from the log (the running attempts are the tasks whose last event is a
start), so they are not a second source of truth; they are what makes claims exact.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from psycopg import sql

from execution_ledger.adapters.postgres.recorder import Statement, id_list

RUNNING = "running_attempts"
WORKERS = "worker_nodes"
QUEUE_FLAGS = "queue_flags"
IDEMPOTENCY_KEYS = "idempotency_keys"
SCHEDULE_CLOCK = "schedule_clock"
QUEUE_RUNNING = "ledger_queue_running"  # the function that counts a queue's running attempts
CANCEL_CHANNEL = "ledger_cancel"  # the channels' prefixes: each schema has its own
READY_CHANNEL = "ledger_ready"


def _channel(prefix: str, schema: str) -> str:
    """``prefix_<crc32 of the schema>``: NOTIFY channels are the database's, so two
    ledgers (schemas) of one database must not wake each other's workers."""
    return f"{prefix}_{zlib.crc32(schema.encode('utf-8')):08x}"


def ready_channel(schema: str) -> str:
    """Where saves that make work claimable (or free a slot) notify, naming the queues."""
    return _channel(READY_CHANNEL, schema)


def cancel_channel(schema: str) -> str:
    """Where a cancelled or timed-out running attempt is notified (its task id)."""
    return _channel(CANCEL_CHANNEL, schema)

def listen(channel: str) -> sql.Composed:
    """Start listening on a NOTIFY ``channel`` (quoted: channel names are case-sensitive)."""
    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))


_CREATE = """
CREATE TABLE IF NOT EXISTS {running} (
    task_id uuid PRIMARY KEY,
    attempt integer NOT NULL,
    queue text NOT NULL,
    lane text,
    worker text NOT NULL,
    started_at timestamptz NOT NULL,
    lease_expires_at timestamptz NOT NULL,
    close_deadline timestamptz NOT NULL,
    heartbeat_seconds double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS running_attempts_queue_idx ON {running} (queue);
CREATE INDEX IF NOT EXISTS running_attempts_lane_idx ON {running} (lane) WHERE lane IS NOT NULL;
CREATE INDEX IF NOT EXISTS running_attempts_worker_idx ON {running} (worker);
CREATE INDEX IF NOT EXISTS running_attempts_lease_idx ON {running} (lease_expires_at);
CREATE TABLE IF NOT EXISTS {workers} (
    worker text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    queues text[] NOT NULL,
    concurrency integer NOT NULL,
    started_at timestamptz NOT NULL,
    last_seen timestamptz NOT NULL
);
ALTER TABLE {workers} ADD COLUMN IF NOT EXISTS registry_version integer;
CREATE TABLE IF NOT EXISTS {schedule_clock} (
    name text PRIMARY KEY,
    looked_at timestamptz,
    paused boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS {keys} (
    key text PRIMARY KEY,
    task_id uuid NOT NULL,
    expires_at timestamptz
);
CREATE TABLE IF NOT EXISTS {flags} (
    queue text PRIMARY KEY,
    paused boolean NOT NULL
);
CREATE OR REPLACE FUNCTION {queue_running}(q text, counted interval)
RETURNS TABLE (running bigint, uncounted bigint)
LANGUAGE plpgsql STABLE
SET enable_bitmapscan = off
AS $$
BEGIN
    RETURN QUERY
    SELECT count(*), count(*) FILTER (WHERE w.worker IS NULL)
    FROM {running} AS r LEFT JOIN {workers} AS w
      ON w.worker = r.worker AND w.last_seen > now() - counted
    WHERE r.queue = q;
END $$;
"""
# ``{queue_running}``: a queue's running attempts, and how many of them belong to no
# worker seen within ``counted``. Its rows churn (one in and one out per attempt), and
# until a vacuum their dead index entries stay behind: a bitmap scan, which the planner
# takes for a small table's count, visits them all on every claim (0.3-1.1 ms a call
# after a drain of 10,000 tasks), where an index scan marks them dead on its first visit
# and skips them after (~0.1 ms). The function keeps the index scan: the setting holds
# for its one statement, not for the claim's transaction (the dispatch queue's GIN
# look-ups are bitmap scans). PL/pgSQL, as it keeps the statement's plan between calls: a
# SQL function's statement is planned at each call (0.17 ms a call here).


@dataclass(frozen=True)
class StartedAttempt:
    task_id: UUID
    attempt: int
    queue: str
    lane: str | None
    heartbeat_seconds: float
    start_to_close: float


class RunningTables:
    """SQL of the operational tables of one schema."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.running = sql.Identifier(schema, RUNNING)
        self.workers = sql.Identifier(schema, WORKERS)
        self.flags = sql.Identifier(schema, QUEUE_FLAGS)
        self.queue_running = sql.Identifier(schema, QUEUE_RUNNING)
        self.keys = sql.Identifier(schema, IDEMPOTENCY_KEYS)
        self.schedule_clock = sql.Identifier(schema, SCHEDULE_CLOCK)
        # Rows travel as one JSON text and ids as one comma-separated text: psycopg dumps
        # arrays element by element in Python, a string in C.
        self._sql_insert_started = (
            sql.SQL(
                "INSERT INTO {} (task_id, attempt, queue, lane, worker, started_at, "
                "lease_expires_at, close_deadline, heartbeat_seconds) "
                "SELECT t, a, q, l, %s, %s, e, d, h FROM json_to_recordset(%s::json) AS r("
                "t uuid, a integer, q text, l text, e timestamptz, d timestamptz, "
                "h double precision)"
            )
            .format(self.running)
            .as_string(None)
        )
        self._sql_delete = (
            sql.SQL("DELETE FROM {} WHERE task_id = ANY(string_to_array(%s, ',')::uuid[])")
            .format(self.running)
            .as_string(None)
        )
        self._sql_renew = (
            sql.SQL(
                "UPDATE {} SET lease_expires_at = now() + heartbeat_seconds * interval '1 second' "
                "WHERE worker = %s AND task_id = ANY(string_to_array(%s, ',')::uuid[]) "
                "RETURNING task_id, lease_expires_at"
            )
            .format(self.running)
            .as_string(None)
        )
        self._sql_worker_seen = (
            sql.SQL("UPDATE {} SET last_seen = now() WHERE worker = %s")
            .format(self.workers)
            .as_string(None)
        )
        self._sql_worker_registered = (
            sql.SQL(
                "INSERT INTO {} (worker, host, pid, queues, concurrency, started_at, last_seen) "
                "VALUES (%s, %s, %s, %s, %s, now(), now()) ON CONFLICT (worker) DO UPDATE SET "
                "last_seen = now(), queues = excluded.queues, concurrency = excluded.concurrency"
            )
            .format(self.workers)
            .as_string(None)
        )
        self._sql_key_holders = (
            sql.SQL(
                "SELECT key, task_id FROM {} WHERE key = ANY(%s) "
                "AND (expires_at IS NULL OR expires_at > now())"
            )
            .format(self.keys)
            .as_string(None)
        )

    def create_statement(self) -> sql.Composed:
        return sql.SQL(_CREATE).format(
            running=self.running,
            workers=self.workers,
            flags=self.flags,
            keys=self.keys,
            schedule_clock=self.schedule_clock,
            queue_running=self.queue_running,
        )

    def attempts_started(
        self, attempts: Sequence[StartedAttempt], worker: str, now: datetime
    ) -> Statement:
        """One statement for all the rows of one claim."""
        rows = [
            {
                "t": str(a.task_id),
                "a": a.attempt,
                "q": a.queue,
                "l": a.lane,
                "e": (now + timedelta(seconds=a.heartbeat_seconds)).isoformat(),
                "d": (now + timedelta(seconds=a.start_to_close)).isoformat(),
                "h": a.heartbeat_seconds,
            }
            for a in attempts
        ]
        return Statement(self._sql_insert_started, (worker, now, json.dumps(rows)))

    def attempts_ended(self, task_ids: Sequence[UUID]) -> Statement:
        return Statement(self._sql_delete, (id_list(task_ids),))

    def attempt_ended(self, task_id: UUID) -> Statement:
        return self.attempts_ended([task_id])

    def attempts_stopped(self, task_ids: Sequence[UUID]) -> list[Statement]:
        """Running attempts ended by someone else (a cancel, a timeout): their rows gone
        and each holder told on the cancel channel, in the ending save's transaction."""
        if not task_ids:
            return []
        return [self.attempts_ended(task_ids), *(self.cancel_notice(t) for t in task_ids)]

    def leases_renewed(self, worker: str, task_ids: Sequence[UUID]) -> Statement:
        """Extend the leases of ``worker``'s attempts of ``task_ids`` by their heartbeat;
        returns (``task_id``, ``lease_expires_at``) of those it still holds."""
        return Statement(self._sql_renew, (worker, id_list(task_ids)))

    def worker_seen(self, worker: str) -> Statement:
        return Statement(self._sql_worker_seen, (worker,))

    def worker_registered(
        self, worker: str, host: str, pid: int, queues: Sequence[str], concurrency: int
    ) -> Statement:
        """The worker's row, new or refreshed (its queues and concurrency as now)."""
        return Statement(
            self._sql_worker_registered, (worker, host, pid, list(queues), concurrency)
        )

    def key_holders(self, keys: Sequence[str]) -> Statement:
        """The live holders of idempotency ``keys``: rows (``key``, ``task_id``)."""
        return Statement(self._sql_key_holders, (list(keys),))

    def keys_taken(self, taken: Sequence[tuple[str, UUID, datetime | None]]) -> list[Statement]:
        """Claim idempotency keys for new tasks, ``(key, task_id, expires_at)`` each, in two
        statements whatever their number: an expired holder gives way; a live one makes the
        insert fail (unique violation), so the whole save is refused."""
        if not taken:
            return []
        rows = json.dumps(
            [
                {"key": key, "task_id": str(task_id), "expires_at": _iso(expires)}
                for key, task_id, expires in taken
            ]
        )
        return [
            Statement(
                sql.SQL(
                    "DELETE FROM {} WHERE key IN (SELECT r.key FROM json_to_recordset(%s::json) "
                    "AS r(key text)) AND expires_at <= now()"
                ).format(self.keys),
                (rows,),
            ),
            Statement(
                sql.SQL(
                    "INSERT INTO {} (key, task_id, expires_at) SELECT key, task_id, expires_at "
                    "FROM json_to_recordset(%s::json) AS r(key text, task_id uuid, "
                    "expires_at timestamptz)"
                ).format(self.keys),
                (rows,),
            ),
        ]

    def cancel_notice(self, task_id: UUID) -> Statement:
        return Statement(
            sql.SQL("SELECT pg_notify(%s, %s)"), (cancel_channel(self.schema), str(task_id))
        )

    def set_schedule_paused(self, name: str, paused: bool) -> Statement:
        return Statement(
            sql.SQL(
                "INSERT INTO {} (name, paused) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET paused = excluded.paused"
            ).format(self.schedule_clock),
            (name, paused),
        )

    def set_paused(self, queue: str, paused: bool) -> Statement:
        """The queue's flag, and a ready notice naming no queue: workers that skip notices
        of queues they saw paused claim again (and see the new flag)."""
        return Statement(
            sql.SQL(
                "WITH flag AS (INSERT INTO {} (queue, paused) VALUES (%s, %s) "
                "ON CONFLICT (queue) DO UPDATE SET paused = excluded.paused RETURNING 1) "
                "SELECT pg_notify(%s, '') FROM flag"
            ).format(self.flags),
            (queue, paused, ready_channel(self.schema)),
        )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()

