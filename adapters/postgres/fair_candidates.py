"""The candidates of a fair queue (``[queues.NAME] fair_key``): due tasks taken in turns
across their keys, read without ranking the whole queue.

A task's turn is its rank among the due tasks of its key and priority (by enqueue order);
candidates go by priority, then turn, then enqueue order: the first task of every key, then
the second of every key, and so on. Only the first ``limit`` tasks of each key can be among
the first ``limit`` of that order (any later one has ``limit`` tasks of its own key ahead of
it), so the query reads no more than that per key:

1. the keys with due work: a skip scan of ``dispatch_queue_fair_idx`` (one index probe per
   key, not per task);
2. each key's first ``limit`` due tasks (an index range each; none for the keys passed
   over: those a rate limit keyed like the queue holds full until later), plus the keyless
   ones among
   the queue's first ``KEYLESS_WINDOW`` due tasks (tasks queued before the queue had a
   ``fair_key``, or moved into it from a queue without one: a fair queue's own tasks get the
   key ``""`` when their args lack a field);
3. turns over those rows, the first ``limit`` taken, then locked (``FOR UPDATE OF q SKIP
   LOCKED``, in an outer query: a window function does not go with ``FOR UPDATE``; their
   state is checked again there, and a row another transaction holds is left out, not
   replaced), with their stored events.

Cost: about (keys x ``limit``) rows per claim, whatever the backlog. The index holds only
rows with a key that are ready or scheduled, so queues without ``fair_key`` pay nothing for
it on the write path.
"""

from __future__ import annotations

from psycopg import sql

KEYLESS_WINDOW = 1000

_CREATE_INDEX = """
CREATE INDEX IF NOT EXISTS dispatch_queue_fair_idx ON {queue} (queue, fair_key, priority DESC, seq)
    WHERE fair_key IS NOT NULL AND state IN ('ready', 'scheduled')
"""

# A row is due and, in a lane, the lane's oldest due task (as in the plain candidate query).
_DUE = (
    "{r}.state IN ('ready', 'scheduled') AND ({r}.run_at IS NULL OR {r}.run_at <= now()) "
    "AND ({r}.lane IS NULL OR NOT EXISTS ("
    "  SELECT 1 FROM {{queue}} AS e WHERE e.lane = {r}.lane AND e.seq < {r}.seq "
    "  AND e.state IN ('ready', 'scheduled') AND (e.run_at IS NULL OR e.run_at <= now())))"
)

_QUERY = (
    "WITH RECURSIVE keys AS ("
    "  (SELECT r.fair_key AS k FROM {queue} AS r WHERE r.queue = %(queue)s "
    "   AND r.fair_key IS NOT NULL AND r.state IN ('ready', 'scheduled') "
    "   ORDER BY r.fair_key LIMIT 1) "
    "  UNION ALL "
    "  SELECT (SELECT r.fair_key FROM {queue} AS r WHERE r.queue = %(queue)s "
    "   AND r.fair_key > keys.k AND r.state IN ('ready', 'scheduled') "
    "   ORDER BY r.fair_key LIMIT 1) "
    "  FROM keys WHERE keys.k IS NOT NULL), "
    "heads AS ("
    "  SELECT h.task_id, h.fair_key, h.priority, h.seq FROM keys CROSS JOIN LATERAL ("
    "    SELECT r.task_id, r.fair_key, r.priority, r.seq FROM {queue} AS r "
    "    WHERE r.queue = %(queue)s AND r.fair_key = keys.k "
    "    AND r.fair_key <> ALL(%(passed_over)s::text[]) AND " + _DUE.format(r="r") + " "
    "    ORDER BY r.priority DESC, r.seq LIMIT %(limit)s) AS h "
    "  UNION ALL "
    "  (SELECT n.task_id, n.fair_key, n.priority, n.seq FROM ("
    "    SELECT w.* FROM {queue} AS w WHERE w.queue = %(queue)s "
    "    AND w.state IN ('ready', 'scheduled') "
    "    ORDER BY w.priority DESC, w.seq LIMIT %(keyless_window)s) AS n "
    "   WHERE n.fair_key IS NULL AND " + _DUE.format(r="n") + " "
    "   ORDER BY n.priority DESC, n.seq LIMIT %(limit)s)), "
    "turns AS ("
    "  SELECT task_id, priority, seq, "
    "  row_number() OVER (PARTITION BY fair_key, priority ORDER BY seq) AS turn FROM heads), "
    "ranked AS ("
    "  SELECT * FROM turns ORDER BY priority DESC, turn, seq LIMIT %(limit)s), "
    "c AS ("
    "  SELECT q.task_id, q.queue, q.lane, q.priority, q.seq, k.turn "
    "  FROM ranked AS k JOIN {queue} AS q ON q.task_id = k.task_id "
    "  WHERE q.state IN ('ready', 'scheduled') "
    "  ORDER BY q.priority DESC, k.turn, q.seq "
    "  FOR UPDATE OF q SKIP LOCKED) "
    "SELECT c.task_id, c.queue, c.lane, c.priority, c.seq, c.turn, "
    "v.originator_id, v.originator_version, v.topic, v.state "
    "FROM c JOIN {events} AS v ON v.originator_id = c.task_id "
    "ORDER BY c.priority DESC, c.turn, c.seq, v.originator_version"
)


def fair_candidates_query(queue_table: sql.Identifier, events_table: sql.Identifier) -> str:
    """The query, with named parameters ``queue``, ``limit``, ``keyless_window`` and
    ``passed_over`` (keys whose tasks are not read)."""
    return sql.SQL(_QUERY).format(queue=queue_table, events=events_table).as_string(None)


def create_index_statement(queue_table: sql.Identifier) -> sql.Composed:
    """The index of the skip scan (created with the schema, idempotently)."""
    return sql.SQL(_CREATE_INDEX).format(queue=queue_table)
