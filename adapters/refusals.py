"""How the ways in say no, written once: the refusal body ``{"error": {"code", "message"}}``
(HTTP answers, NATS replies), the one reading of a JSON body (``parse_body``: an HTTP
request's, a NATS message's; ``BadJson``, code ``bad_json``) and the failures that mean the
database is unreachable (``DATABASE_ERRORS``: HTTP 503, a NATS message nak'ed or answered
``unavailable``). Which domain error is which HTTP status stays in ``http/errors.py``.
"""

from __future__ import annotations

import json
from typing import Any

import eventsourcing.persistence
import psycopg

DATABASE_ERRORS = (
    psycopg.OperationalError,
    eventsourcing.persistence.OperationalError,
    eventsourcing.persistence.InterfaceError,
)


def error_body(code: str, message: str) -> dict[str, Any]:
    """A refusal, as every way in answers one: ``{"error": {"code", "message"}}``."""
    return {"error": {"code": code, "message": message}}


class BadJson(ValueError):
    """A body that is not JSON (its message says why); code ``bad_json``."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_body(data: bytes) -> Any:
    """A body as JSON: refused (``BadJson``) when not UTF-8, nested too deeply, or not JSON
    (NaN and Infinity included)."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise BadJson("the body is not UTF-8") from None
    except RecursionError:
        raise BadJson("the body is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, NaN/Infinity, over-long integers
        raise BadJson(f"the body is not valid JSON: {error}") from None
