"""The one place where failures become HTTP statuses and ``{"error": {"code", "message"}}``.

Domain errors keep their own ``code``; outside failures (bad JSON, a body over the cap,
an unknown route, an unreachable database) get codes of their own. Every 401 and 403, and
every refused ad-hoc adapter setting (422), is handed to ``on_denied`` (the audit trail)
before the response goes out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from execution_ledger.adapters import refusals
from execution_ledger.domain.errors import (
    AdapterSettingsRefused,
    ConfigError,
    Forbidden,
    InvalidQuery,
    InvalidSchedule,
    InvalidSubmission,
    InvalidTransition,
    LedgerError,
    TaskNotFound,
    UnknownQueue,
    UnknownSchedule,
)
from execution_ledger.domain.registry_change import RegistryChangeRefused
from execution_ledger.domain.registry_evidence import EvidenceRefused
from execution_ledger.domain.registry_history import RegistryVersionNotFound

log = logging.getLogger(__name__)

# Most specific first: InvalidSubmission covers UnknownTaskType, SchemaViolation,
# UnknownDependency and DependencyCycle.
STATUS_OF_ERROR: tuple[tuple[type[LedgerError], int], ...] = (
    (InvalidSubmission, 422),
    (ConfigError, 422),
    (InvalidQuery, 400),
    (InvalidSchedule, 400),
    (TaskNotFound, 404),
    (UnknownQueue, 404),
    (UnknownSchedule, 404),
    (InvalidTransition, 409),
    (RegistryChangeRefused, 409),
    (RegistryVersionNotFound, 404),
    (EvidenceRefused, 422),
    (Forbidden, 403),
)

# Refusals recorded as denials whatever their status (policy said no, not a typo).
RECORDED_REFUSALS: tuple[type[LedgerError], ...] = (AdapterSettingsRefused,)

DATABASE_ERRORS = refusals.DATABASE_ERRORS  # 503 database_unavailable

# aiohttp's own refusals (raised before or around a handler).
CODE_OF_HTTP_STATUS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


class HttpError(Exception):
    """A refusal that belongs to the HTTP layer (bad JSON, no token, too many requests)."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def bad_json(message: str) -> HttpError:
    return HttpError(400, "bad_json", message)


def unauthenticated(message: str) -> HttpError:
    return HttpError(401, "unauthenticated", message, {"WWW-Authenticate": 'Bearer realm="ledger"'})


def unsupported_media_type(message: str) -> HttpError:
    return HttpError(415, "unsupported_media_type", message)


def status_of(error: LedgerError) -> int:
    for kind, status in STATUS_OF_ERROR:
        if isinstance(error, kind):
            return status
    return 400


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(refusals.error_body(code, message)),
        content_type="application/json",
        headers=headers,
    )


def http_error_response(error: HttpError) -> web.Response:
    response = error_response(error.status, error.code, error.message, error.headers)
    if error.headers.get("Connection") == "close":
        response.force_close()  # e.g. a body too slow: the connection ends with the answer
    return response


DenialHook = Callable[[web.Request, int, str], Awaitable[None]]


def error_middleware(on_denied: DenialHook) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Turn every failure of a handler into a JSON error response."""

    @web.middleware
    async def errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        recorded = False
        try:
            response = await handler(request)
        except HttpError as error:
            response = http_error_response(error)
            message = error.message
        except LedgerError as error:
            response = error_response(status_of(error), error.code, str(error))
            message = str(error)
            recorded = isinstance(error, RECORDED_REFUSALS)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            code = CODE_OF_HTTP_STATUS.get(error.status, "http_error")
            headers = {k: v for k, v in error.headers.items() if k.lower() == "allow"}
            message = error.reason if error.status != 413 else error.text or error.reason
            response = error_response(error.status, code, message, headers)
        except DATABASE_ERRORS as error:
            log.warning(
                "database unavailable during %s %s: %s", request.method, request.path, error
            )
            response = error_response(
                503,
                "database_unavailable",
                "the database is unavailable; try again shortly",
                {"Retry-After": "1"},
            )
            message = ""
        except Exception:
            log.exception("unexpected failure in %s %s", request.method, request.path)
            return error_response(500, "internal_error", "an unexpected error; see the server log")
        else:
            return response
        if recorded or response.status in (401, 403):
            await on_denied(request, response.status, message)
        return response

    return errors
