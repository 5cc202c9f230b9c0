"""The service's error answers as exceptions: the same classes as in process.

An answer ``{"error": {"code", "message"}}`` becomes the ``domain.errors`` class of that
code (``TaskNotFound`` for ``task_not_found``, ``InvalidSubmission`` for its codes, ...), so
``except TaskNotFound`` works the same against ``Ledger`` and against a running service.
Codes of the service itself (``database_unavailable``, ``rate_limited``, ``outcome_unknown``,
``unauthorized``, ...) become ``ServiceError`` with that code. Either carries ``status``
(the HTTP status) and ``code``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from execution_ledger.domain import errors as domain_errors
from execution_ledger.domain.errors import LedgerError


class RemoteError(LedgerError):
    """Any error answer of the service: ``status`` (HTTP) and ``details`` (the answer's
    ``error`` object). The exception raised is also the domain class of its code."""

    code = "remote_error"

    def __init__(self, message: str, status: int = 0, details: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.details: Mapping[str, Any] = details or {}


class ServiceError(RemoteError):
    """An error answer whose code is the service's own (not a domain error)."""

    code = "service_error"


class ConnectionFailed(ServiceError):
    """The service could not be reached, or the answer was not the service's."""

    code = "connection_failed"


def _subclasses(base: type[LedgerError]) -> Iterator[type[LedgerError]]:
    for sub in base.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _domain_classes() -> dict[str, type[LedgerError]]:
    classes: dict[str, type[LedgerError]] = {}
    for value in vars(domain_errors).values():
        if isinstance(value, type) and issubclass(value, LedgerError):
            classes.setdefault(value.code, value)
    for sub in _subclasses(LedgerError):  # codes declared in other domain modules
        if sub.__module__.startswith("domain."):
            classes.setdefault(sub.code, sub)
    return classes


_remote_classes: dict[type[LedgerError], type[RemoteError]] = {}


def _remote_class(cls: type[LedgerError]) -> type[RemoteError]:
    """``cls`` and ``RemoteError`` in one class, so both ``except`` clauses catch it."""
    remote = _remote_classes.get(cls)
    if remote is None:
        remote = type(f"Remote{cls.__name__}", (RemoteError, cls), {"code": cls.code})
        _remote_classes[cls] = remote
    return remote


def error_from_answer(status: int, body: Any) -> RemoteError:
    """The exception for an error answer (its JSON body already parsed, or None)."""
    detail = body.get("error") if isinstance(body, Mapping) else None
    detail = detail if isinstance(detail, Mapping) else {}
    code = str(detail.get("code", ""))
    message = str(detail.get("message", "")) or f"the service answered {status}"
    cls = _domain_classes().get(code)
    error = (_remote_class(cls) if cls is not None else ServiceError)(message, status, detail)
    if code:
        error.code = code
    return error
