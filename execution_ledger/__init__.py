"""The Execution Ledger's public face: what a program imports to use it.

In process, against the database::

    from execution_ledger import TaskRequest, open_runtime

    runtime = open_runtime()            # LEDGER_CONFIG, LEDGER_DATABASE_URL, LEDGER_SCHEMA
    task = runtime.ledger.enqueue(TaskRequest("add", {"a": 1, "b": 2}))

From a program that reaches a running service over HTTP::

    from execution_ledger import LedgerClient

    with LedgerClient("http://127.0.0.1:8080") as ledger:
        view = ledger.enqueue("add", {"a": 1, "b": 2}, wait=30)

The product's code lives in four packages below this one, each a top-level folder of the
repository (linked here): ``domain`` (aggregates, events, pure rules), ``projections``
(read models), ``processors`` (reactions and the worker loop) and ``adapters`` (Postgres,
HTTP, NATS, executors, the CLI). Names listed in ``__all__`` are the stable API; anything
reached through a subpackage may change between releases.

Names load on first use, so ``import execution_ledger.domain.task`` stays cheap and the
subpackages can import each other without cycles through this module.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from execution_ledger.adapters.client import (
        AsyncLedgerClient,
        ConnectionFailed,
        LedgerClient,
        RemoteError,
        ServiceError,
        TaskView,
    )
    from execution_ledger.adapters.ledger import Ledger
    from execution_ledger.adapters.node import WorkerNode
    from execution_ledger.adapters.runtime import Runtime, open_runtime
    from execution_ledger.domain.errors import (
        ConfigError,
        Forbidden,
        IdempotencyKeyTaken,
        InvalidSubmission,
        InvalidTransition,
        LedgerError,
        TaskNotFound,
        UnknownQueue,
        UnknownTaskType,
    )
    from execution_ledger.domain.submission import Requester, TaskRequest
    from execution_ledger.domain.task import Task, TaskState

    __version__: str

# Each public name, and the module it is defined in.
_HOMES = {
    "open_runtime": "adapters.runtime",
    "Runtime": "adapters.runtime",
    "Ledger": "adapters.ledger",
    "WorkerNode": "adapters.node",
    "TaskRequest": "domain.submission",
    "Requester": "domain.submission",
    "Task": "domain.task",
    "TaskState": "domain.task",
    "LedgerClient": "adapters.client",
    "AsyncLedgerClient": "adapters.client",
    "TaskView": "adapters.client",
    "RemoteError": "adapters.client",
    "ServiceError": "adapters.client",
    "ConnectionFailed": "adapters.client",
    "LedgerError": "domain.errors",
    "InvalidSubmission": "domain.errors",
    "UnknownTaskType": "domain.errors",
    "InvalidTransition": "domain.errors",
    "IdempotencyKeyTaken": "domain.errors",
    "TaskNotFound": "domain.errors",
    "UnknownQueue": "domain.errors",
    "Forbidden": "domain.errors",
    "ConfigError": "domain.errors",
}

__all__ = [
    "AsyncLedgerClient",
    "ConfigError",
    "ConnectionFailed",
    "Forbidden",
    "IdempotencyKeyTaken",
    "InvalidSubmission",
    "InvalidTransition",
    "Ledger",
    "LedgerClient",
    "LedgerError",
    "RemoteError",
    "Requester",
    "Runtime",
    "ServiceError",
    "Task",
    "TaskNotFound",
    "TaskRequest",
    "TaskState",
    "TaskView",
    "UnknownQueue",
    "UnknownTaskType",
    "WorkerNode",
    "__version__",
    "open_runtime",
]

DISTRIBUTION = "execution-ledger"


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"  # imported from a checkout that was never installed


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _installed_version()
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
