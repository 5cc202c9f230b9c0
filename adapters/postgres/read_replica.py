"""Reads that may lag: a read-only replica (``LEDGER_READ_DATABASE_URL``) serves the list
queries of ``task_queries``, the dataset stream and replay, and ``ledger audit verify``, while
its replay lag is within ``read_max_lag``; past it, or when it does not answer, those reads
go to the primary. Reads that must be current (one task, its history, ``?wait``, claims)
never come here.

The lag is how old the newest replayed transaction is while the replica has received more
than it replayed (zero when it replayed all it received, or when it is a primary itself, as
after a promotion); it is measured at most once a second (an unreachable replica is tried
again every 5 s). A replay or a verification wants more than a bounded lag: the whole log up
to the primary's head, so ``caught_up`` waits (at most ``read_max_lag``) until the replica
has replayed the primary's WAL position taken after the head was read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from execution_ledger.adapters.postgres.connection_pool import CONNECT_TIMEOUT, CONNECTION_OPTIONS
from execution_ledger.adapters.postgres.conninfo import connection_kwargs, describe, redact

if TYPE_CHECKING:
    from execution_ledger.adapters.postgres.event_store import EventStore

log = logging.getLogger(__name__)
T = TypeVar("T")

STATUS_TTL = 1.0  # seconds a lag measurement is reused
DOWN_TTL = 5.0  # seconds before an unreachable replica is tried again (a try may take 2 s)
CATCH_UP_POLL = 0.05  # seconds between two looks at the replica's replay position
LAG_QUERY = (
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0.0 "
    "WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0.0 "
    "ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8 "
    "END AS lag"
)
REPLAYED_QUERY = (
    "SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= %s::pg_lsn AS caught_up"
)


@dataclass(frozen=True)
class ReadStatus:
    """Where lag-tolerant reads go now, and why."""

    target: str  # "replica" or "primary"
    replica: str | None = None  # host:port/dbname, no credentials
    lag_seconds: float | None = None
    max_lag_seconds: float | None = None
    reason: str | None = None  # why the primary, when a replica is configured

    @property
    def reachable(self) -> bool:
        return self.reason is None or not self.reason.startswith("replica unreachable")

    def as_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"target": self.target}
        if self.replica is not None:
            shown |= {
                "replica": self.replica,
                "replica_lag_seconds": self.lag_seconds,
                "read_max_lag_seconds": self.max_lag_seconds,
            }
        if self.reason is not None:
            shown["reason"] = self.reason
        return shown


PRIMARY_ONLY = ReadStatus(target="primary")


class ReadReplica:
    """A small pool on the replica and its measured lag."""

    def __init__(self, url: str, max_lag: float) -> None:
        self.url = url
        self.max_lag = max_lag
        self.name = describe(url)
        kwargs = connection_kwargs(url, CONNECTION_OPTIONS)
        self.pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
            kwargs={**kwargs, "row_factory": dict_row},
            min_size=0,
            max_size=4,
            open=False,
            timeout=CONNECT_TIMEOUT,
            configure=_read_only,
            check=ConnectionPool.check_connection,
        )
        self.pool.open(wait=False)
        self._lock = threading.Lock()
        self._status: ReadStatus | None = None
        self._measured_at = 0.0

    def close(self) -> None:
        self.pool.close()

    def status(self) -> ReadStatus:
        """Where lag-tolerant reads go now (measured at most every ``STATUS_TTL`` s)."""
        with self._lock:
            now = time.monotonic()
            ttl = STATUS_TTL if self._status is None or self._status.reachable else DOWN_TTL
            if self._status is None or now - self._measured_at >= ttl:
                self._status = self._measure()
                self._measured_at = time.monotonic()
            return self._status

    def _measure(self) -> ReadStatus:
        try:
            with self.pool.connection() as conn:
                row = conn.execute(LAG_QUERY).fetchone()
        except psycopg.Error as error:
            reason = f"replica unreachable: {redact(str(error).strip())}"
            log.warning("reads go to the primary: %s", reason)
            return self._shown("primary", None, reason)
        lag = None if row is None or row["lag"] is None else round(float(row["lag"]), 3)
        if lag is None:
            return self._shown("primary", None, "replica lag unknown")
        if lag > self.max_lag:
            return self._shown("primary", lag, "replica lag past read_max_lag")
        return self._shown("replica", lag, None)

    def _shown(self, target: str, lag: float | None, reason: str | None) -> ReadStatus:
        return ReadStatus(target, self.name, lag, self.max_lag, reason)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[DictRow]]:
        """A read-only connection to the replica (whatever its lag)."""
        with self.pool.connection() as conn:
            yield conn

    def caught_up(self, store: EventStore) -> bool:
        """Whether the replica has replayed everything the primary committed up to now,
        waiting for it at most ``read_max_lag``."""
        if self.status().target != "replica":
            return False
        with store.transaction() as cur:
            row = cur.execute("SELECT pg_current_wal_lsn()::text AS lsn").fetchone()
        assert row is not None
        give_up = time.monotonic() + self.max_lag
        try:
            while True:
                with self.pool.connection() as conn:
                    done = conn.execute(REPLAYED_QUERY, (row["lsn"],)).fetchone()
                if done is not None and done["caught_up"]:
                    return True
                if time.monotonic() >= give_up:
                    return False
                time.sleep(CATCH_UP_POLL)
        except psycopg.Error as error:
            log.warning("reads go to the primary: %s", redact(str(error).strip()))
            return False


LogConnections = Callable[[], AbstractContextManager[psycopg.Connection[DictRow]]]


def whole_log_reads(store: EventStore) -> tuple[str, LogConnections]:
    """Where to read the log up to the head just read on the primary (a replay, an audit
    verification): the replica once it has replayed all of it (``caught_up``), else the
    primary's pool; with the name of the one chosen ("replica" or "primary")."""
    replica = store.replica
    if replica is not None and replica.caught_up(store):
        return "replica", replica.connection
    return "primary", store.recorder.datastore.get_connection


def whole_log_url(store: EventStore) -> tuple[str, str]:
    """As ``whole_log_reads``, for a caller opening its own connection: the URL."""
    replica = store.replica
    if replica is not None and replica.caught_up(store):
        return "replica", replica.url
    return "primary", store.database_url


def read_status(store: EventStore) -> ReadStatus:
    """Where ``store``'s lag-tolerant reads go now."""
    replica = store.replica
    return PRIMARY_ONLY if replica is None else replica.status()


def lag_tolerant_read(store: EventStore, read: Callable[[psycopg.Cursor[DictRow]], T]) -> T:
    """``read`` in a read-only transaction on the replica while its lag is within bounds,
    else in a transaction on the primary (``store``'s pool). A replica that fails the read
    because it lacks what it names (a table, column or function of a schema it has not
    replayed yet: SQLSTATE class 42, or 3F000), that cancels it for a conflict with its
    replay, or that is lost during it, leaves that read to the primary: the answer is
    current, never a server error. A read cancelled by the request's deadline is not
    tried again."""
    with ExitStack() as stack:
        conn = _replica_connection(store, stack)
        if conn is not None:
            try:
                with conn.transaction():
                    return read(conn.cursor())
            except psycopg.Error as error:
                if not _left_to_the_primary(error):
                    raise
                log.warning(
                    "a read went to the primary, the replica failed it: %s",
                    redact(str(error).strip()),
                )
    with store.transaction() as cur:
        return read(cur)


def lag_tolerant_rows(
    store: EventStore, query: sql.Composed | str, params: Sequence[Any] = ()
) -> list[DictRow]:
    """The rows of one query, read as ``lag_tolerant_read`` reads."""
    return lag_tolerant_read(store, lambda cur: cur.execute(query, params).fetchall())


def _left_to_the_primary(error: psycopg.Error) -> bool:
    """Whether a read the replica failed is tried on the primary: a name it lacks (class
    42: a table, column or function not replayed yet; 3F000: the schema), a conflict with
    its replay (40001), a lost connection; not the request's deadline (57014)."""
    if isinstance(error, psycopg.errors.QueryCanceled):
        return False
    state = error.sqlstate or ""
    return (
        state.startswith("42")
        or state in ("3F000", "40001")
        or isinstance(error, psycopg.OperationalError)
    )


def _replica_connection(store: EventStore, stack: ExitStack) -> psycopg.Connection[DictRow] | None:
    """A connection to ``store``'s replica while reads go there (``None`` otherwise)."""
    replica = store.replica
    if replica is None or replica.status().target != "replica":
        return None
    try:
        return stack.enter_context(replica.connection())
    except psycopg.Error as error:  # lost since it was measured: the primary
        log.warning("reads go to the primary: %s", redact(str(error).strip()))
        return None


def _read_only(conn: psycopg.Connection[Any]) -> None:
    conn.read_only = True  # every transaction: BEGIN READ ONLY
