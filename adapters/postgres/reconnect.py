"""How a long-lived connection (a LISTEN loop) comes back after the database went away:
connect with a short timeout and TCP keep-alives (a silent peer is noticed in seconds), and
try again after a short, capped pause (``ReconnectPause``), so a restarted server is heard
again well within a second of accepting connections."""

from __future__ import annotations

from typing import Any

from psycopg.conninfo import conninfo_to_dict

from execution_ledger.adapters.postgres.connection_pool import CONNECTION_OPTIONS

FIRST_PAUSE = 0.05  # seconds before the first new attempt
MAX_PAUSE = 0.25  # seconds between attempts, at most


def listen_options(conninfo: str = "") -> dict[str, Any]:
    """Keyword arguments of ``psycopg.(Async)Connection.connect`` for a LISTEN connection to
    ``conninfo``: the short connect timeout and keep-alives, where it sets none of its own."""
    given = conninfo_to_dict(conninfo)
    return {key: value for key, value in CONNECTION_OPTIONS.items() if key not in given}


class ReconnectPause:
    """Pauses between attempts: ``FIRST_PAUSE``, doubling up to ``MAX_PAUSE``."""

    def __init__(self) -> None:
        self._next = FIRST_PAUSE

    def next(self) -> float:
        pause, self._next = self._next, min(self._next * 2, MAX_PAUSE)
        return pause

    def reset(self) -> None:
        """Connected: the next loss starts from the shortest pause again."""
        self._next = FIRST_PAUSE
