"""NATS egress: every ledger event published once to JetStream, in log order.

``EventEgress`` follows the event log like a projection does, with its position tracked in
``projection_positions`` under the name ``nats_egress``, and publishes each event as JSON to
``<event_subject_prefix>.<EventType>`` in the stream ``settings.stream`` (created if missing,
subjects ``<prefix>.>``, duplicate window ``DUPLICATE_WINDOW``).

Exactly once, in order:
- events are published one after the other, the next only after JetStream acknowledged the
  previous one; a failed publish (NATS down, JetStream recovering, ack lost) is retried with
  back-off, never skipped, so the position never moves past an unacknowledged event;
- each message carries ``Nats-Msg-Id: <schema>:<position>``: a publish repeated after a
  lost ack or a crash is dropped by the stream's duplicate window;
- the position is stored (its own transaction) after the acks of a batch. At start, and
  before resending after a failure, the egress also reads the id of the stream's last
  message: when it is one of its own, the stream wins (publishing resumes after it), so a
  resend later than the duplicate window does not duplicate, and messages a NATS crash lost
  after acknowledging them are published again. docs/nats.md names the residual risks.
- on a NATS cluster the stream keeps ``replicas`` copies (3): when the server leading it
  dies, publishes fail until another is elected, and are retried as above; the new
  leader's duplicate window drops a repeated id.

One process publishes at a time (a session advisory lock on ``<schema>.nats_egress``); the
others stand by and take over when its database session ends. It is woken by LISTEN on the
events table's channel, with a short fallback poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import StorageType

from execution_ledger.adapters.ledger_reads import RecordedEvent
from execution_ledger.adapters.runtime import FOLLOWER_FAILURES, Appends, LogFollower
from execution_ledger.adapters.views import dumps, event_json
from execution_ledger.domain.nats_routes import NatsSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

EGRESS_NAME = "nats_egress"
DUPLICATE_WINDOW = 120.0  # seconds JetStream remembers message ids
MSG_ID = "Nats-Msg-Id"

# What a publish may fail with while NATS is down, restarting or recovering its streams.
NATS_FAILURES = (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError)


class _Stopped(Exception):
    """``stop`` was set while waiting to retry."""


def event_message(prefix: str, recorded: RecordedEvent) -> tuple[str, bytes]:
    """The subject and JSON body of one event (the shape of ``GET /v1/events``)."""
    body = event_json(recorded)
    return f"{prefix}.{body['type']}", dumps(body).encode()


class EventEgress:
    def __init__(
        self,
        follower: LogFollower,
        js: JetStreamContext,
        settings: NatsSettings,
        *,
        batch_size: int = 200,
        fallback_poll: float = 0.5,
        publish_timeout: float = 2.0,
        max_backoff: float = 5.0,
        duplicate_window: float = DUPLICATE_WINDOW,
        replicas: int = 1,
    ) -> None:
        self.follower = follower  # its position, its lock, its reads (Runtime.log_follower)
        self.js = js
        self.settings = settings
        self.name = follower.name
        self.batch_size = batch_size
        self.fallback_poll = fallback_poll
        self.publish_timeout = publish_timeout
        self.max_backoff = max_backoff
        self.duplicate_window = duplicate_window
        self.replicas = replicas  # copies the stream keeps (3 on a cluster: a node may die)
        self.subjects = f"{settings.event_subject_prefix}.>"
        self.id_prefix = f"{follower.schema}:"
        self.active = False  # this instance holds the lock and publishes
        self.published = 0  # messages acknowledged (duplicates included) by this instance

    # -- the position -----------------------------------------------------------------

    def position(self) -> int:
        """The last position known to be in the stream (blocking)."""
        return self.follower.position()

    def _advance(self, position: int) -> None:
        self.follower.advance(position)

    # -- running ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the log until ``stop`` is set, standing by while another process
        publishes, reconnecting after a lost database connection."""
        while not stop.is_set():
            try:
                async with self.follower.leading() as appends:
                    if appends is None:  # another process publishes
                        await _wait(stop, 1.0)
                        continue
                    self.active = True
                    log.info("NATS egress active from position %d", await self._position())
                    await self._follow(appends, stop)
            except _Stopped:
                return
            except FOLLOWER_FAILURES as error:
                log.warning("NATS egress lost its database connection (%s); reconnecting", error)
                await _wait(stop, 1.0)
            finally:
                self.active = False

    async def _follow(self, appends: Appends, stop: asyncio.Event) -> None:
        position = await self._start(stop)
        while not stop.is_set():
            events = await asyncio.to_thread(self.follower.read, position, self.batch_size)
            if events:
                position = await self._publish_batch(position, events, stop)
                continue
            await appends.wait(self.fallback_poll)

    async def publish_pending(self, stop: asyncio.Event | None = None) -> int:
        """Publish everything up to the head of the log once (no lock, no LISTEN): for
        tests and one-off catch-up. Returns the position reached."""
        stop = stop or asyncio.Event()
        try:
            position = await self._start(stop)
            while events := await asyncio.to_thread(self.follower.read, position, self.batch_size):
                position = await self._publish_batch(position, events, stop)
        except _Stopped:
            return await self._position()
        return position

    async def _start(self, stop: asyncio.Event) -> int:
        """Where to publish from: the tracked position, checked against the stream."""
        await self._retrying(self.ensure_stream, stop, "the stream is not ready")
        position = await self._position()
        last = await self._retrying(self.last_published, stop, "cannot read the stream")
        return await self._reconciled(position, last)

    async def _position(self) -> int:
        return await asyncio.to_thread(self.position)

    # -- publishing -------------------------------------------------------------------

    async def _publish_batch(
        self, start: int, events: Sequence[RecordedEvent], stop: asyncio.Event
    ) -> int:
        """Publish ``events`` (those after ``start``) in order and store the position of
        the last acknowledged one, also when stopped half way. Returns the position to read
        on from: that one, or an earlier one if the stream turned out to miss messages."""
        previous = start
        try:
            for recorded in events:
                rewind = await self._publish_one(recorded, previous, stop)
                if rewind is not None:
                    return rewind
                previous = recorded.position
        finally:
            if previous > start:
                await asyncio.to_thread(self._advance, previous)
        return previous

    async def _publish_one(
        self, recorded: RecordedEvent, previous: int, stop: asyncio.Event
    ) -> int | None:
        """Publish one event until JetStream acknowledges it (or shows it holds it).
        ``previous`` is the position acknowledged before it; returns None when done, or the
        position to publish after if the stream lost messages it had acknowledged."""
        why = self.follower.undecodable(recorded)
        if why is not None:
            log.warning(
                "NATS egress: the event at position %d does not decode (%s); not published",
                recorded.position,
                why,
            )
            return None
        subject, payload = event_message(self.settings.event_subject_prefix, recorded)
        headers = {MSG_ID: f"{self.id_prefix}{recorded.position}"}
        delay = 0.1
        failures = 0
        while True:
            try:
                if failures:
                    # The message may be stored with its ack lost (and the outage may have
                    # outlasted the duplicate window): look at the stream before resending.
                    await self.ensure_stream()
                    last = await self.last_published()
                    if last is not None and last >= recorded.position:
                        log.info("NATS egress: position %d was stored", recorded.position)
                        return None
                    if last is not None and last < previous:
                        return await self._reconciled(previous, last)
                await self.js.publish(
                    subject,
                    payload,
                    timeout=self.publish_timeout,
                    stream=self.settings.stream,
                    headers=dict(headers),
                )
                self.published += 1
                if failures:
                    log.info("NATS egress resumed at position %d", recorded.position)
                return None
            except NATS_FAILURES as error:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "NATS egress: publishing position %d failed (%s: %s); retrying",
                        recorded.position,
                        type(error).__name__,
                        error,
                    )
                if await _wait(stop, delay):
                    raise _Stopped from None
                delay = min(delay * 2, self.max_backoff)

    async def _retrying(
        self, call: Callable[[], Awaitable[T]], stop: asyncio.Event, what: str
    ) -> T:
        delay = 0.1
        failures = 0
        while True:
            try:
                return await call()
            except NATS_FAILURES as error:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("NATS egress: %s (%s: %s)", what, type(error).__name__, error)
                if await _wait(stop, delay):
                    raise _Stopped from None
                delay = min(delay * 2, self.max_backoff)

    async def _reconciled(self, position: int, last: int | None) -> int:
        """Where to publish from when ``position`` was acknowledged last and the stream's
        last message of ours is ``last``: the stream wins where it speaks for us."""
        if last is None or last == position:
            return position
        head = await asyncio.to_thread(self.follower.head_position)
        if last > head:
            log.warning(
                "stream %s holds position %d of schema %s but the log ends at %d "
                "(a recreated database?); publishing after %d",
                self.settings.stream,
                last,
                self.follower.schema,
                head,
                position,
            )
            return position
        if last > position:  # acked, then a crash before the position was stored
            await asyncio.to_thread(self._advance, last)
            return last
        log.warning(
            "stream %s ends at position %d but %d was acknowledged (messages lost by NATS?); "
            "publishing again after %d",
            self.settings.stream,
            last,
            position,
            last,
        )
        return last

    # -- the stream -------------------------------------------------------------------

    async def ensure_stream(self) -> None:
        """Create the stream, or widen an existing one to our subjects, window and
        replicas."""
        stream = self.settings.stream
        try:
            info = await self.js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(
                name=stream,
                subjects=[self.subjects],
                storage=StorageType.FILE,
                duplicate_window=self.duplicate_window,
                num_replicas=self.replicas,
                description="Execution Ledger events, one message per log position",
            )
            log.info("created JetStream stream %s for %s", stream, self.subjects)
            return
        config = info.config
        subjects = list(config.subjects or [])
        changes: dict[str, Any] = {}
        if self.subjects not in subjects and ">" not in subjects:
            changes["subjects"] = [*subjects, self.subjects]
        if (config.duplicate_window or 0) < self.duplicate_window:
            changes["duplicate_window"] = self.duplicate_window
        if (config.num_replicas or 1) < self.replicas:
            changes["num_replicas"] = self.replicas
        if changes:
            await self.js.update_stream(config.evolve(**changes))
            log.info("updated JetStream stream %s: %s", stream, sorted(changes))

    async def last_published(self) -> int | None:
        """The log position of the stream's last message if this ledger published it."""
        try:
            message = await self.js.get_last_msg(self.settings.stream, self.subjects)
        except nats.js.errors.NotFoundError:
            return None
        msg_id = (message.headers or {}).get(MSG_ID, "")
        if not msg_id.startswith(self.id_prefix):
            return None
        suffix = msg_id[len(self.id_prefix) :]
        return int(suffix) if suffix.isdigit() else None


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop``; True if stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
