"""The HTTP client of the ledger service: for programs that talk to a running ``ledger
serve`` rather than open the database themselves. Sync (``LedgerClient``) and asyncio
(``AsyncLedgerClient``), typed results (``TaskView``, ``TaskPage``, ``EventView``, ...) and
the service's error codes as the domain's own exceptions (also ``RemoteError``s)."""

from execution_ledger.adapters.client.async_client import AsyncLedgerClient
from execution_ledger.adapters.client.errors import ConnectionFailed, RemoteError, ServiceError
from execution_ledger.adapters.client.models import (
    EventPage,
    EventView,
    GraphView,
    TaskPage,
    TaskView,
)
from execution_ledger.adapters.client.sync_client import LedgerClient

__all__ = [
    "AsyncLedgerClient",
    "ConnectionFailed",
    "EventPage",
    "EventView",
    "GraphView",
    "LedgerClient",
    "RemoteError",
    "ServiceError",
    "TaskPage",
    "TaskView",
]
