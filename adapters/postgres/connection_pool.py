"""The event store's connection pool, tuned for outages: give up in time, come back fast.

The eventsourcing library's ``PostgresDatastore`` builds a psycopg pool; ``use_ledger_pool``
(called by ``LedgerPostgresFactory``, the library's factory for the ledger) replaces it
(before first use, same sizes and setup) by a ``LedgerPool`` that

- waits for a connection no longer than the current call's deadline (``adapters/deadlines``)
  and then raises ``NoConnectionInTime`` instead of the pool's own timeout, so the thread
  gives up before it writes anything (and the library does not retry);
- checks a connection on checkout without a round trip: an idle connection with something to
  read (the server closed it, or said why) is pinged; one that fails drops every idle
  connection of the pool, which are new ones at once (a restarted server killed them all);
- retries a lost connection every ``RECONNECT_DELAY_MAX`` seconds at most (psycopg's own
  back-off doubles up to minutes);
- connects with a short ``connect_timeout`` and TCP keep-alives, so neither a connect nor a
  statement (a ``COMMIT`` among them) waits for ever on a peer that went silent;
- connects with the operator's whole connection string (TLS, several hosts with
  ``target_session_attrs``, ...), those options only where it sets none of its own.
"""

from __future__ import annotations

import select
import weakref
from collections.abc import Callable
from typing import Any

import psycopg
from eventsourcing.persistence import Environment
from eventsourcing.postgres import ConnectionPool, PostgresDatastore, PostgresFactory
from psycopg_pool import PoolClosed
from psycopg_pool.pool import AddConnection

from execution_ledger.adapters.deadlines import NoConnectionInTime, current_deadline
from execution_ledger.adapters.postgres.conninfo import connection_kwargs

CONNECT_TIMEOUT = 2  # seconds for libpq to connect (its smallest useful value)
POOL_WAIT = 10.0  # seconds a caller without a deadline waits for a connection
CONNINFO_KEY = "POSTGRES_CONNINFO"  # the library setting holding the whole connection string
RECONNECT_DELAY_MAX = 0.25  # seconds between two attempts to replace a lost connection
CONNECTION_OPTIONS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,  # ms a sent statement may stay unacknowledged
}


class LedgerPool(ConnectionPool[Any]):
    """The library's pool, bounded by the call's deadline, quick to drop and replace dead
    connections."""

    _closed_for_good = False

    def getconn(self, timeout: float | None = None) -> Any:
        deadline = current_deadline()
        if timeout is not None or deadline is None or deadline.wrote:
            return super().getconn(timeout)
        wait = deadline.connection_wait(self.timeout)
        try:
            return super().getconn(wait)
        except psycopg.OperationalError as error:  # timed out, closed, too many waiting
            raise deadline.passed() from error

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool, unless it was closed: a closed store stays closed (psycopg would
        open a pool again that was closed before it was ever opened)."""
        if self._closed_for_good:
            deadline = current_deadline()
            if deadline is not None:
                raise NoConnectionInTime("the database connections are closed")
            raise PoolClosed(f"the pool {self.name!r} is closed")
        super().open(wait, timeout)

    def close(self, timeout: float = 5.0) -> None:
        self._closed_for_good = True
        super().close(timeout)

    def schedule_task(self, task: Any, delay: float) -> None:
        if isinstance(task, AddConnection):
            delay = min(delay, RECONNECT_DELAY_MAX)
        super().schedule_task(task, delay)


def use_ledger_pool(datastore: PostgresDatastore, conninfo: str) -> None:
    """Give ``datastore`` a ``LedgerPool`` in place of the pool it built (not yet used),
    connecting with every parameter of the operator's ``conninfo`` (the library's own
    settings hold only five of them); ``CONNECTION_OPTIONS`` fill in what it leaves out."""
    old = datastore.pool
    holder: list[weakref.ref[LedgerPool]] = []
    old_kwargs = old.kwargs() if callable(old.kwargs) else old.kwargs  # a dict or a callable
    row_factory = (old_kwargs or {}).get("row_factory")
    pool = LedgerPool(
        connection_class=old.connection_class,
        kwargs={**connection_kwargs(conninfo, CONNECTION_OPTIONS), "row_factory": row_factory},
        min_size=old.min_size,
        max_size=old.max_size,
        open=False,
        configure=datastore.after_connect_func(),
        timeout=POOL_WAIT,
        max_waiting=old.max_waiting,
        max_lifetime=old.max_lifetime,
        get_password_func=old.get_password_func,
        check=_check_on_checkout(holder),
    )
    holder.append(weakref.ref(pool))
    old.close()
    datastore.pool = pool


class LedgerPostgresFactory(PostgresFactory):
    """The library's Postgres factory, whose datastore gets a ``LedgerPool`` on the whole
    connection string (``CONNINFO_KEY``) before its first connection (the recorder
    connects at construction)."""

    def __init__(self, env: Environment):
        super().__init__(env)
        use_ledger_pool(self.datastore, self.env.get(CONNINFO_KEY) or "")


def _check_on_checkout(holder: list[weakref.ref[LedgerPool]]) -> Callable[[Any], None]:
    """Ping a connection only when it has something to read; a failed ping drains the
    pool (``holder``: the pool, weakly, once built)."""

    def check(conn: psycopg.Connection[Any]) -> None:
        if conn.closed or has_input(conn):
            try:
                ConnectionPool.check_connection(conn)
            except Exception:
                pool = holder[0]() if holder else None
                if pool is not None:
                    pool.drain()  # its siblings died with it: replace them all now
                raise

    return check


def has_input(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection has bytes to read (EOF or a message from the server)."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


async def connect_on_loop(datastore: PostgresDatastore) -> psycopg.AsyncConnection[Any]:
    """An async connection made as ``datastore``'s pool makes its own (the whole connection
    string, ``CONNECTION_OPTIONS``, the library's session setting), in autocommit mode;
    refused, as the pool refuses, once the pool is closed."""
    pool = datastore.pool
    if pool.closed:
        raise PoolClosed(f"the pool {pool.name!r} is closed")
    made = pool.kwargs() if callable(pool.kwargs) else pool.kwargs or {}
    kwargs = {key: value for key, value in made.items() if key != "row_factory"}
    if pool.get_password_func is not None:
        kwargs["password"] = pool.get_password_func()
    connection = await psycopg.AsyncConnection.connect(autocommit=True, **kwargs)
    idle_ms = int(datastore.idle_in_transaction_session_timeout * 1000)
    await connection.execute(f"SET idle_in_transaction_session_timeout = '{idle_ms}ms'")
    return connection
