"""NATS ingress: messages on configured subjects become recorded tasks.

Ways in (each message is handled by one ledger node):
- each ``request`` route's subject (wildcards allowed; core NATS, queue group ``ledger``: a
  reply needs a live requester): the JSON body is the args of the route's task type; a
  request is answered with the task's terminal state;
- the ``publish`` routes' subjects, through a JetStream stream and its durable consumer
  (``publish_stream.py``): the body is the args; nothing is answered, even a refusal. A
  message is acked once its task is committed, or once it is refused for good (bad body,
  refused submission: logged); when the database is unavailable it is nak'ed and delivered
  again. Its idempotency key is its ``Nats-Msg-Id``, else its stream and sequence;
- ``request_subject`` (default ``execution.request.task``): the body names the type, as the
  HTTP API's ``POST /v1/tasks`` body does (``{"type", "args", ...}``), plus an optional
  ``wait`` (seconds, default 30) bounding how long a request waits for the result. A plain
  publish (no reply subject) only enqueues.

Every task is enqueued by principal ``nats`` with one role (``admin`` unless told), through
``Ledger.enqueue_once``: a ``Nats-Msg-Id`` header becomes the idempotency key, so a
redelivered message records one task (and a repeated request gets that task's answer).
Ad-hoc tasks (``adapter`` in the body) are refused unless ``allow_adhoc``.

Answers: ``{"task_id", "state", "result", "failure"}`` (``failure``: the task's error, or
null; a state that is not terminal means the wait ran out first), or a refusal
``{"error": {"code", "message"}}`` with the domain error's code (``bad_json``,
``unknown_task_type``, ``schema_violation``, ``forbidden``, ...) and nothing enqueued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar
from uuid import UUID

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from execution_ledger.adapters.ledger_reads import RecordedEvent
from execution_ledger.adapters.nats.connection import stream_replicas as replicas_for
from execution_ledger.adapters.nats.publish_stream import (
    ACK_WAIT,
    CONSUMER,
    DUPLICATE_WINDOW,
    NATS_FAILURES,
    PublishConsumer,
)
from execution_ledger.adapters.nats.signal_ingress import subscribe_signals
from execution_ledger.adapters.off_loop import run_off_loop
from execution_ledger.adapters.refusals import DATABASE_ERRORS, BadJson, error_body, parse_body
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.adapters.submission_json import submitted_task
from execution_ledger.adapters.task_wait import wait_for_end
from execution_ledger.adapters.telemetry.context import enqueue_trace
from execution_ledger.adapters.views import dumps, task_json
from execution_ledger.domain.errors import AdapterSettingsRefused, Forbidden, LedgerError
from execution_ledger.domain.nats_routes import NatsRoute, NatsSettings, RouteMode, subjects_overlap
from execution_ledger.domain.submission import Requester, TaskRequest
from execution_ledger.domain.task import Task

log = logging.getLogger(__name__)
T = TypeVar("T")

PRINCIPAL = "nats"
QUEUE_GROUP = "ledger"
MSG_ID = "Nats-Msg-Id"
DEFAULT_WAIT = 30.0  # seconds a request on the request subject waits for the result
MAX_WAIT = 3600.0


class Refused(Exception):
    """A message that cannot become a task; answered with ``{"error": {code, message}}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NatsIngress:
    def __init__(
        self,
        runtime: Runtime,
        nc: Client,
        settings: NatsSettings | None = None,
        *,
        role: str = "admin",
        queue_group: str = QUEUE_GROUP,
        allow_adhoc: bool = False,
        max_in_flight: int = 256,
        db_threads: int = 8,
        duplicate_window: float = DUPLICATE_WINDOW,
        retry_delay: float = 1.0,
        ack_wait: float = ACK_WAIT,
        stream_replicas: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.nc = nc
        self.settings = settings or runtime.registry.nats
        self.requester = Requester(PRINCIPAL, role)
        self.queue_group = queue_group
        self.allow_adhoc = allow_adhoc
        self.watcher = runtime.log_watcher()
        self.executor = ThreadPoolExecutor(max_workers=db_threads, thread_name_prefix="nats-db")
        self.closing = asyncio.Event()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._subscriptions: list[Subscription] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._watcher_task: asyncio.Task[None] | None = None
        self.publish: PublishConsumer | None = None
        if self.settings.publish_routes:
            self.publish = PublishConsumer(
                nc.jetstream(),
                self.settings,
                self.settle_stored,
                duplicate_window=duplicate_window,
                retry_delay=retry_delay,
                ack_wait=ack_wait,
                replicas=stream_replicas or replicas_for(nc, self.settings.stream_replicas),
            )
        self._publish_stop = asyncio.Event()
        self._publish_task: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Subscribe, handle messages until ``stop`` is set, then unsubscribe and answer
        the requests in flight with the state their tasks reached."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.close()

    async def start(self) -> None:
        self._watcher_task = asyncio.create_task(self.watcher.run(), name="nats-log-watcher")
        for route in self.settings.routes:
            if route.mode is RouteMode.REQUEST:
                await self._subscribe(route.subject, route)
        await self._subscribe(self.settings.request_subject, None)
        self._subscriptions.append(  # signals to waiting tasks (signal_ingress.py)
            await subscribe_signals(
                self.nc, self.runtime, self.requester, self._run, self.queue_group
            )
        )
        await registered(self.nc)  # the server knows the subscriptions before we say we listen
        log.info(
            "NATS ingress on %s (queue group %s)",
            ", ".join(s.subject for s in self._subscriptions),
            self.queue_group,
        )
        if self.publish is not None:
            await self._start_publish(self.publish)

    async def _start_publish(self, publish: PublishConsumer) -> None:
        """Bind to the publish routes' stream now if NATS lets us (so what is published
        from here on is kept), else keep trying in the consumer's loop."""
        try:
            await publish.bind()
            bound = True
        except NATS_FAILURES as error:
            log.warning("NATS ingress: stream %s not ready yet (%s)", publish.stream, error)
            bound = False
        self._publish_task = asyncio.create_task(
            publish.run(self._publish_stop, bound=bound), name="nats-publish-routes"
        )
        log.info(
            "NATS ingress on stream %s (%s), consumer %s",
            publish.stream,
            ", ".join(r.subject for r in self.settings.publish_routes),
            CONSUMER,
        )

    async def _subscribe(self, subject: str, route: NatsRoute | None) -> None:
        async def on_message(msg: Msg) -> None:
            # Callbacks of one subscription run one after the other: hand the message to
            # its own task (waits can be long) and hold the subscription when too many are
            # in flight.
            await self._slots.acquire()
            handler = asyncio.create_task(self._guarded(msg, route))
            self._handlers.add(handler)
            handler.add_done_callback(self._handled)

        subscription = await self.nc.subscribe(subject, queue=self.queue_group, cb=on_message)
        self._subscriptions.append(subscription)

    def _handled(self, handler: asyncio.Task[None]) -> None:
        self._handlers.discard(handler)
        self._slots.release()

    async def close(self, grace: float = 5.0) -> None:
        self.closing.set()
        await self._stop_publish(grace)
        for subscription in self._subscriptions:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
        self._subscriptions.clear()
        self.watcher.wake_all()  # waiting requests answer now, with the state reached
        if self._handlers:
            _, late = await asyncio.wait(set(self._handlers), timeout=grace)
            for handler in late:
                handler.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._watcher_task is not None:
            self._watcher_task.cancel()
            await asyncio.gather(self._watcher_task, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _stop_publish(self, grace: float) -> None:
        """Stop fetching; the batch in hand is settled first (or, after ``grace``, left
        unacked: delivered again, to this node or another)."""
        self._publish_stop.set()
        if self._publish_task is not None:
            done, _ = await asyncio.wait({self._publish_task}, timeout=grace)
            if not done:
                self._publish_task.cancel()
            await asyncio.gather(self._publish_task, return_exceptions=True)
        if self.publish is not None:
            await self.publish.close()

    # -- one message ------------------------------------------------------------------

    async def settle_stored(self, msg: Msg, key: str) -> bool:
        """A publish route's message from the stream: True once it is a task (committed, or
        recorded before under ``key``) or refused for good (logged; acked, so never
        delivered again); False when the database is unavailable (delivered again)."""
        routes = self.settings.publish_routes
        route = next((r for r in routes if subjects_overlap(r.subject, msg.subject)), None)
        if route is None:
            log.warning("NATS message on %s matches no publish route: dropped", msg.subject)
            return True
        try:
            request, _ = self.task_request(msg, route)
            request = _with_key(request, key)
            with enqueue_trace(msg.headers, "nats", msg.subject) as trace:
                task, created = await self._run(
                    self.runtime.ledger.enqueue_once, trace.carry(request), self.requester
                )
                trace.enqueued([task], created)
        except (Refused, LedgerError) as refusal:
            # Acked: never delivered again, so the log is where a dropped message shows.
            log.warning("NATS message on %s refused: %s: %s", msg.subject, refusal.code, refusal)
            await self._record_if_denied(msg, refusal)
            return True
        except DATABASE_ERRORS:
            first = msg.metadata.num_delivered <= 1  # one warning per message, not per retry
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "NATS message on %s not enqueued yet: database unavailable",
                msg.subject,
            )
            return False
        log.debug("NATS %s -> task %s (new: %s)", msg.subject, task.id, created)
        return True

    async def _guarded(self, msg: Msg, route: NatsRoute | None) -> None:
        try:
            await self.handle(msg, route)
        except Exception:
            log.exception("NATS message on %s: handling failed", msg.subject)
            if msg.reply and (route is None or route.mode is RouteMode.REQUEST):
                await self._respond(msg, error_body("internal_error", "the ledger failed"))

    async def handle(self, msg: Msg, route: NatsRoute | None) -> None:
        """Enqueue the message's task; answer a request if the route answers."""
        answers = bool(msg.reply) and (route is None or route.mode is RouteMode.REQUEST)
        try:
            request, wait = self.task_request(msg, route)
            with enqueue_trace(msg.headers, "nats", msg.subject) as trace:
                task, created = await self._run(
                    self.runtime.ledger.enqueue_once, trace.carry(request), self.requester
                )
                trace.enqueued([task], created)
        except Refused as refusal:
            await self._refuse(msg, answers, refusal.code, refusal.message)
            return
        except LedgerError as error:
            await self._record_if_denied(msg, error)
            await self._refuse(msg, answers, error.code, str(error))
            return
        except DATABASE_ERRORS as error:
            log.warning("NATS message on %s not enqueued: database unavailable", msg.subject)
            await self._refuse(msg, answers, "unavailable", f"database unavailable: {error}")
            return
        log.debug("NATS %s -> task %s (new: %s)", msg.subject, task.id, created)
        if not answers:
            return
        try:
            task, events = await self._wait_for_end(task.id, wait)
        except DATABASE_ERRORS as error:
            await self._respond(msg, error_body("unavailable", f"database unavailable: {error}"))
            return
        await self._respond(msg, reply_body(task, events))

    def task_request(self, msg: Msg, route: NatsRoute | None) -> tuple[TaskRequest, float]:
        """The task a message asks for, and how long a request waits for its end."""
        body = _json_body(msg.data)
        key = (msg.headers or {}).get(MSG_ID) or None
        if route is not None:
            if body is None:
                body = {}
            request = TaskRequest(type_name=route.task_type, args=body, idempotency_key=key)
            return request, route.timeout
        if not isinstance(body, dict):
            raise Refused("invalid_submission", "the body must be a JSON object naming a type")
        body = dict(body)
        wait = body.pop("wait", DEFAULT_WAIT)
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not wait >= 0:
            raise Refused("invalid_submission", "wait must be a number of seconds")
        if "adapter" in body and not self.allow_adhoc:
            raise Forbidden("ad-hoc tasks (adapter) are not accepted over NATS")
        request = submitted_task(body)
        if key is not None:
            request = _with_key(request, key)
        return request, min(float(wait), MAX_WAIT)

    async def _wait_for_end(
        self, task_id: UUID, seconds: float
    ) -> tuple[Task, list[RecordedEvent]]:
        """The task once it is terminal, or when ``seconds`` have passed (or on close)."""
        return await wait_for_end(
            self.runtime.reads, self.watcher, self._run, task_id, seconds, self.closing
        )

    async def _record_if_denied(self, msg: Msg, refusal: Exception) -> None:
        """A refusal by policy (the role, an ad-hoc task, a refused adapter setting) is an
        ``AccessDenied`` event, as over HTTP; a malformed message is only logged."""
        if not isinstance(refusal, Forbidden | AdapterSettingsRefused):
            return
        try:
            await self._run(
                self.runtime.ledger.record_denial,
                self.requester.principal,
                f"nats {msg.subject}",
                str(refusal),
            )
        except DATABASE_ERRORS:
            log.warning("could not record the refusal of a NATS message on %s", msg.subject)

    async def _refuse(self, msg: Msg, answers: bool, code: str, message: str) -> None:
        log.info("NATS message on %s refused: %s: %s", msg.subject, code, message)
        if answers:
            await self._respond(msg, error_body(code, message))

    async def _respond(self, msg: Msg, body: dict[str, Any]) -> None:
        data = dumps(body).encode()
        if len(data) > self.nc.max_payload:
            task_id = body.get("task_id")
            data = dumps(
                error_body(
                    "reply_too_large",
                    f"the answer of task {task_id} is {len(data)} bytes, more than NATS "
                    f"allows ({self.nc.max_payload}); read it over HTTP",
                )
                | {"task_id": task_id}
            ).encode()
        try:
            # Not msg.respond(): that would send the request's headers back.
            await self.nc.publish(msg.reply, data)
        except nats.errors.Error as error:
            log.warning("cannot answer on %s: %s", msg.reply, error)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await run_off_loop(self.executor, function, *args)


async def registered(nc: Client) -> None:
    """Return once the server has every subscription sent so far.

    nats-py's ``flush()`` writes its PING straight to the socket while SUBs may still wait
    in the client's pending buffer, so one PONG does not prove the SUBs arrived; by the
    second PONG the buffer has been written ahead of the second PING."""
    await nc.flush()
    await nc.flush()


def reply_body(task: Task, events: Sequence[RecordedEvent]) -> dict[str, Any]:
    """The answer to a request: the task's state, result and (unless it succeeded) why it
    failed, was cancelled or skipped, as the HTTP task view says."""
    view = task_json(task, events)
    return {
        "task_id": task.id,
        "state": view["state"],
        "result": view["result"],
        "failure": view["error"],
    }


def _json_body(data: bytes) -> Any:
    """The message body as JSON (None when empty)."""
    if not data.strip():
        return None
    try:
        return parse_body(data)
    except BadJson as error:
        raise Refused("bad_json", str(error)) from None


def _with_key(request: TaskRequest, key: str) -> TaskRequest:
    return replace(request, idempotency_key=key)
