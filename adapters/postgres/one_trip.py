"""A transaction whose ``BEGIN`` and ``COMMIT`` travel with its statements: one round trip.

psycopg's ``transaction()`` in pipeline mode nests pipelines around the transaction and
syncs at each level's exit: a save that sends all its statements at once still waits for
the server two or three times (after the statements, after ``COMMIT``, once more on the way
out), each a full round trip and a wake-up of the waiting thread. On the autocommit
connections of the pool, ``pipelined`` instead queues ``BEGIN``, the caller's statements and
``COMMIT`` in one pipeline and syncs once, at the end. A result the caller fetches inside
the block costs one more round trip there (it must be read to decide), nothing else does.

Errors: a statement the server refuses makes it skip the rest up to the sync, ``COMMIT``
included; psycopg raises the error at the sync (or at the fetch that met it). The session
is then inside a failed transaction block, and a body that raised left one open: either
way a rollback ends it before the connection goes back to the pool, and psycopg forgets
the statements it prepared meanwhile (the server skipped those too).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from typing import Any

import psycopg
from psycopg import pq
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row


@contextmanager
def pipelined(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Cursor[DictRow]]:
    """One transaction on autocommit ``conn``: everything sent in one pipeline, one sync."""
    cursor = conn.cursor(row_factory=dict_row)
    try:
        with conn.pipeline():
            cursor.execute("BEGIN")
            yield cursor
            cursor.execute("COMMIT")
    finally:
        if not conn.closed and conn.info.transaction_status in _OPEN:
            # psycopg's rollback(), not a ROLLBACK statement: it also forgets the statements
            # it prepared in the aborted pipeline (the server skipped their PREPARE, and a
            # later use of one would fail: "prepared statement _pg3_2 does not exist").
            # A connection that broke meanwhile raises here: the pool discards it.
            with suppress(psycopg.Error):
                conn.rollback()


_OPEN = (TransactionStatus.INTRANS, TransactionStatus.INERROR)


def batched(conn: psycopg.Connection[Any]) -> AbstractContextManager[Any]:
    """A block whose statements go out together, their results read after it: a pipeline
    of its own, or nothing new inside one already (entering a nested pipeline syncs, a round
    trip; a fetch there asks the server for the results so far, the one trip needed)."""
    if conn.pgconn.pipeline_status != pq.PipelineStatus.OFF:
        return nullcontext()
    return conn.pipeline()
