"""The ``publish`` routes' JetStream stream and its durable consumer: messages survive a
NATS outage and a ledger restart until each one has become a task.

- The stream (``[nats] ingress_stream``, default ``<stream>_INGRESS``) captures the subjects
  of every ``publish`` route: file storage (it outlives a server restart), work-queue
  retention (a message leaves the stream when acked), duplicate window ``DUPLICATE_WINDOW``
  on ``Nats-Msg-Id``. It is created at start, or its subjects set to the routes' if it exists.
- One durable pull consumer, ``CONSUMER``, with explicit acks, shared by every ledger node
  (each message goes to one node) and never giving up on a message (``max_deliver`` -1).
- ``PublishConsumer.run`` fetches batches and hands each message to a ``Settle`` callable
  (the ingress): ``True`` once its task is committed or it was refused for good (acked: it
  is never delivered again), ``False`` on a failure worth retrying (nak'ed, delivered again
  after ``retry_delay``). A lost ack means one more delivery, which the idempotency key of
  ``message_key`` turns into the task already recorded.
- NATS gone (killed, restarting, JetStream recovering): the loop backs off, then binds to
  the stream and the consumer again; the consumer resumes from its durable position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)

from execution_ledger.domain.nats_routes import NatsSettings

log = logging.getLogger(__name__)

CONSUMER = "ledger-ingress"
DUPLICATE_WINDOW = 120.0  # seconds the stream drops a repeated Nats-Msg-Id
ACK_WAIT = 30.0  # seconds a delivered message waits for its ack before another delivery
ACK_TIMEOUT = 2.0  # seconds an ack waits for the server's confirmation
ACK_RETRY = 0.25  # seconds between acks of a message while no server confirms
MSG_ID = "Nats-Msg-Id"

# What a JetStream call may fail with while NATS is down, restarting or recovering.
NATS_FAILURES = (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError)

Settle = Callable[[Msg, str], Awaitable[bool]]


def stream_config(
    settings: NatsSettings, duplicate_window: float, replicas: int = 1
) -> StreamConfig:
    return StreamConfig(
        name=settings.publish_stream,
        subjects=[route.subject for route in settings.publish_routes],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=duplicate_window,
        num_replicas=replicas,
        description="Execution Ledger: messages of publish routes until they are tasks",
    )


def message_key(msg: Msg, created: datetime | None) -> str:
    """The idempotency key of a stored message: its ``Nats-Msg-Id`` when the publisher set
    one, else ``nats:<stream>:<stream created>:<stream sequence>`` (the same for every
    delivery of the message; a stream deleted and created again counts from 1 under
    another creation time)."""
    msg_id = (msg.headers or {}).get(MSG_ID)
    if msg_id:
        return msg_id
    meta = msg.metadata
    born = created.strftime("%Y%m%dT%H%M%S.%fZ") if created is not None else "-"
    return f"nats:{meta.stream}:{born}:{meta.sequence.stream}"


class PublishConsumer:
    def __init__(
        self,
        js: JetStreamContext,
        settings: NatsSettings,
        settle: Settle,
        *,
        batch: int = 64,
        fetch_timeout: float = 1.0,
        retry_delay: float = 1.0,
        max_backoff: float = 5.0,
        duplicate_window: float = DUPLICATE_WINDOW,
        ack_wait: float = ACK_WAIT,
        replicas: int = 1,
    ) -> None:
        self.js = js
        self.settings = settings
        self.settle = settle
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.retry_delay = retry_delay
        self.max_backoff = max_backoff
        self.duplicate_window = duplicate_window
        self.ack_wait = ack_wait
        self.replicas = replicas  # copies of the stream (its consumer keeps as many)
        self.stream = settings.publish_stream
        self._created: datetime | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None

    # -- binding ----------------------------------------------------------------------

    async def bind(self) -> None:
        """Create or update the stream, create the durable consumer if missing, and
        subscribe to it."""
        info = await self.ensure_stream()
        self._created = info.created
        try:
            await self.js.consumer_info(self.stream, CONSUMER)
        except nats.js.errors.NotFoundError:
            await self.js.add_consumer(self.stream, self.consumer_config())
            log.info("created JetStream consumer %s on %s", CONSUMER, self.stream)
        if self._subscription is not None:
            with contextlib.suppress(*NATS_FAILURES):
                await self._subscription.unsubscribe()
        self._subscription = await self.js.pull_subscribe_bind(CONSUMER, self.stream)

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            description="Execution Ledger ingress: each message acked once it is a task",
        )

    async def ensure_stream(self) -> StreamInfo:
        """Create the stream, or set an existing one's subjects to the routes' and widen
        its duplicate window and replicas."""
        wanted = stream_config(self.settings, self.duplicate_window, self.replicas)
        try:
            info = await self.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            info = await self.js.add_stream(wanted)
            log.info("created JetStream stream %s for %s", self.stream, wanted.subjects)
            return info
        config = info.config
        # != (not "is not"): a stream's info may carry the plain strings of these enums
        if config.storage != StorageType.FILE or config.retention != wanted.retention:
            log.warning(
                "stream %s has %s storage and %s retention, not file and workqueue: messages "
                "may not survive a NATS restart, or may stay after they became tasks",
                self.stream,
                config.storage,
                config.retention,
            )
        changes: dict[str, object] = {}
        if sorted(config.subjects or []) != sorted(wanted.subjects or []):
            changes["subjects"] = wanted.subjects
        if (config.duplicate_window or 0) < self.duplicate_window:
            changes["duplicate_window"] = self.duplicate_window
        if (config.num_replicas or 1) < self.replicas:
            changes["num_replicas"] = self.replicas
        if changes:
            info = await self.js.update_stream(config.evolve(**changes))
            log.info("updated JetStream stream %s: %s", self.stream, sorted(changes))
        return info

    # -- consuming --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, bound: bool = False) -> None:
        """Settle messages until ``stop``; after a NATS failure, back off and bind again."""
        delay = 0.1
        failures = 0
        while not stop.is_set():
            try:
                if not bound:
                    await self.bind()
                bound = False  # after a failure, bind again
                if failures:
                    log.info("NATS ingress: consuming %s again", self.stream)
                failures, delay = 0, 0.1
                await self._consume(stop)
            except NATS_FAILURES as error:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "NATS ingress: stream %s unavailable (%s: %s); retrying",
                        self.stream,
                        type(error).__name__,
                        error,
                    )
                if await _wait(stop, delay):
                    return
                delay = min(delay * 2, self.max_backoff)

    async def _consume(self, stop: asyncio.Event) -> None:
        assert self._subscription is not None
        while not stop.is_set():
            try:
                messages = await self._subscription.fetch(self.batch, timeout=self.fetch_timeout)
            except TimeoutError:
                continue  # nothing to do (or NATS is reconnecting: the next fetch tells)
            await asyncio.gather(*(self._settle_one(msg) for msg in messages))

    async def _settle_one(self, msg: Msg) -> None:
        try:
            done = await self.settle(msg, message_key(msg, self._created))
        except Exception:
            log.exception("NATS message on %s: handling failed; delivered again", msg.subject)
            done = False
        try:
            if done:
                await self._ack(msg)
            else:
                await msg.nak(delay=self.retry_delay)
        except NATS_FAILURES as error:
            # Not acked: delivered again after ack_wait, and recognised by its key.
            log.warning("NATS message on %s: cannot ack (%s)", msg.subject, error)

    async def _ack(self, msg: Msg) -> None:
        """Ack and wait for the server to confirm it; again (for up to ``ack_wait``) while
        no server answers, as while the consumer's leader has died and another is elected:
        an ack lost there would cost a delivery again after ``ack_wait``."""
        deadline = time.monotonic() + self.ack_wait
        while True:
            try:
                await msg.ack_sync(timeout=ACK_TIMEOUT)
                return
            except NATS_FAILURES:
                if time.monotonic() + ACK_RETRY > deadline:
                    raise
            await asyncio.sleep(ACK_RETRY)

    async def close(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(*NATS_FAILURES):
                await self._subscription.unsubscribe()
            self._subscription = None


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop``; True if stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
