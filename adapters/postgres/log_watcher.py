"""Wake-ups when the event log grows: one LISTEN connection per server (HTTP API, NATS
ingress), shared by every call that waits (``?wait`` enqueues, NATS requests, event streams)
instead of each polling the database. The ways in get one from ``Runtime.log_watcher()``.

Take ``watcher.changed()`` *before* reading what you wait on, then ``await
watcher.wait(changed, timeout)``: an append that commits after the read sets that very
token, so no wake-up is lost. While the connection is down, waits time out sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
from psycopg import sql

from execution_ledger.adapters.postgres.reconnect import ReconnectPause, listen_options

log = logging.getLogger(__name__)

FALLBACK_POLL = 1.0  # seconds, while listening (a safety net only)
DISCONNECTED_POLL = 0.1  # seconds, while the listener is reconnecting


class LogWatcher:
    def __init__(self, database_url: str, channel: str) -> None:
        self.database_url = database_url
        self.channel = channel
        self.listening = False
        self._changed = asyncio.Event()

    def changed(self) -> asyncio.Event:
        """A token set at the next append to the log."""
        return self._changed

    async def wait(self, changed: asyncio.Event, timeout: float) -> None:
        """Until ``changed`` is set or ``timeout`` seconds (shorter while disconnected)."""
        limit = min(timeout, FALLBACK_POLL if self.listening else DISCONNECTED_POLL)
        if limit <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), limit)

    def wake_all(self) -> None:
        """Wake every waiter now (an append, or the server closing)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def run(self) -> None:
        """LISTEN until cancelled, reconnecting after a lost connection (short, capped
        pauses: ``postgres/reconnect.py``)."""
        pause = ReconnectPause()
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.database_url, autocommit=True, **listen_options(self.database_url)
                ) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.listening = True
                    pause.reset()
                    self.wake_all()  # anything appended while not listening
                    async for _ in conn.notifies():
                        self.wake_all()
            except (psycopg.Error, OSError) as error:
                log.warning("event log listener lost its connection (%s); reconnecting", error)
            finally:
                self.listening = False
            await asyncio.sleep(pause.next())
