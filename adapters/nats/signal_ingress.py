"""NATS ingress of signals: a message on the signal subject delivers a named signal (an
approval, an input) to a task waiting for it, as ``POST /v1/tasks/{id}/signal`` does.

The subject is the request subject's with its last token replaced by ``signal``
(``execution.request.task`` -> ``execution.request.signal``; queue group ``ledger``, so one
node handles each message). The body is ``{"task_id": "...", "name": "approval",
"data": ...}``; the signaller is the ingress's principal (``nats``) with its role, so the
role's ``signals`` globs and the type's ``signal_by_other`` apply as over HTTP. A request
is answered with ``{"task_id", "state", "awaiting_signals"}``, or a refusal
``{"error": {"code", "message"}}`` (``bad_json``, ``forbidden``, ``invalid_transition``,
``task_not_found``, ...) with nothing recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from execution_ledger.adapters.refusals import DATABASE_ERRORS, BadJson, error_body, parse_body
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.adapters.views import dumps
from execution_ledger.domain.errors import LedgerError
from execution_ledger.domain.submission import Requester

log = logging.getLogger(__name__)

Run = Callable[..., Awaitable[Any]]  # runs a blocking call off the event loop


def signal_subject(request_subject: str) -> str:
    return request_subject.rsplit(".", 1)[0] + ".signal"


async def subscribe_signals(
    nc: Client, runtime: Runtime, requester: Requester, run: Run, queue_group: str
) -> Subscription:
    """Subscribe to the signal subject; each message is handled as it comes."""
    subject = signal_subject(runtime.registry.nats.request_subject)

    async def on_message(msg: Msg) -> None:
        answer = await deliver(msg, runtime, requester, run)
        if msg.reply:
            await msg.respond(dumps(answer).encode())

    return await nc.subscribe(subject, queue=queue_group, cb=on_message)


async def deliver(msg: Msg, runtime: Runtime, requester: Requester, run: Run) -> dict[str, Any]:
    try:
        task_id, name, data = _parsed(msg.data)
        task = await run(runtime.ledger.signal, task_id, name, data, requester)
    except _BadMessage as error:
        return _refusal(msg, "bad_json", str(error))
    except LedgerError as error:
        return _refusal(msg, error.code, str(error))
    except DATABASE_ERRORS as error:
        return _refusal(msg, "database_unavailable", str(error))
    return {
        "task_id": str(task.id),
        "state": task.state.value,
        "awaiting_signals": list(task.awaited_signals),
    }


class _BadMessage(Exception):
    pass


def _parsed(body: bytes) -> tuple[UUID, Any, Any]:
    try:
        data = parse_body(body)
    except BadJson as error:
        raise _BadMessage(str(error)) from None
    if not isinstance(data, dict) or set(data) - {"task_id", "name", "data"}:
        raise _BadMessage('the body is {"task_id", "name", "data"} (data optional)')
    try:
        task_id = UUID(str(data.get("task_id")))
    except ValueError:
        raise _BadMessage("task_id must be a task id") from None
    return task_id, data.get("name"), data.get("data")


def _refusal(msg: Msg, code: str, message: str) -> dict[str, Any]:
    log.warning("NATS signal on %s refused: %s: %s", msg.subject, code, message)
    return error_body(code, message)
