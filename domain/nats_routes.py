"""NATS settings of the registry: which subjects become which task types, and where ledger
events are published. Parsed from the ``[nats]`` table of the configuration."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from execution_ledger.domain.errors import ConfigError

_SUBJECT_TOKEN = re.compile(r"^([A-Za-z0-9_\-$]+|\*|>)$")


class RouteMode(StrEnum):
    REQUEST = "request"  # request-reply: the reply is the task's terminal result
    PUBLISH = "publish"  # fire-and-forget: the message becomes a task, nothing is answered


@dataclass(frozen=True)
class NatsRoute:
    subject: str  # may hold wildcards (* one token, > the rest)
    task_type: str
    mode: RouteMode = RouteMode.REQUEST
    timeout: float = 30.0  # how long a request-reply route waits for the result


@dataclass(frozen=True)
class NatsSettings:
    request_subject: str = "execution.request.task"  # body names the type: {"type", "args"}
    stream: str = "LEDGER_EVENTS"
    event_subject_prefix: str = "ledger.events"  # events go to PREFIX.<EventType>
    routes: tuple[NatsRoute, ...] = ()
    ingress_stream: str | None = None  # the publish routes' stream; None: <stream>_INGRESS
    stream_replicas: int | None = None  # copies of each stream; None: 3 on a cluster, else 1

    @property
    def publish_stream(self) -> str:
        """The JetStream stream that stores the messages of the ``publish`` routes."""
        return self.ingress_stream or f"{self.stream}_INGRESS"

    @property
    def publish_routes(self) -> tuple[NatsRoute, ...]:
        return tuple(r for r in self.routes if r.mode is RouteMode.PUBLISH)


_KEYS = {
    "request_subject",
    "stream",
    "ingress_stream",
    "event_subject_prefix",
    "routes",
    "stream_replicas",
}
MAX_REPLICAS = 5  # JetStream keeps at most five copies of a stream
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ROUTE_KEYS = {"subject", "task_type", "mode", "timeout"}


def build_nats_settings(data: Any, task_types: Mapping[str, Any]) -> NatsSettings:
    where: tuple[str, ...] = ("nats",)
    if data is None:
        return NatsSettings()
    if not isinstance(data, Mapping):
        raise ConfigError("expected a table", where)
    for key in data:
        if key not in _KEYS:
            raise ConfigError(
                f"unknown key {key!r} (expected one of: {', '.join(sorted(_KEYS))})", (*where, key)
            )
    defaults = NatsSettings()
    request_subject = _subject(
        data.get("request_subject", defaults.request_subject), (*where, "request_subject")
    )
    prefix = _subject(
        data.get("event_subject_prefix", defaults.event_subject_prefix),
        (*where, "event_subject_prefix"),
        wildcards=False,
    )
    stream = _stream_name(data.get("stream", defaults.stream), (*where, "stream"))
    ingress_stream = data.get("ingress_stream")
    if ingress_stream is not None:
        ingress_stream = _stream_name(ingress_stream, (*where, "ingress_stream"))
        if ingress_stream == stream:
            raise ConfigError(
                "ingress_stream must differ from stream (the egress's)",
                (*where, "ingress_stream"),
            )
    routes = data.get("routes", [])
    if not isinstance(routes, list):
        raise ConfigError("routes must be an array of tables ([[nats.routes]])", (*where, "routes"))
    built = tuple(
        _route(spec, (*where, "routes", str(i)), task_types) for i, spec in enumerate(routes)
    )
    _refuse_overlaps(built, request_subject, f"{prefix}.>", where)
    return NatsSettings(
        request_subject=request_subject,
        stream=stream,
        event_subject_prefix=prefix,
        routes=built,
        ingress_stream=ingress_stream,
        stream_replicas=_replicas(data.get("stream_replicas"), (*where, "stream_replicas")),
    )


def _replicas(value: Any, where: tuple[str, ...]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REPLICAS:
        raise ConfigError(f"stream_replicas must be a whole number from 1 to {MAX_REPLICAS}", where)
    return value


def _stream_name(value: Any, where: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not _STREAM_NAME.fullmatch(value):
        raise ConfigError(
            f"{where[-1]} must be a JetStream stream name (letters, digits, _ and -)", where
        )
    return value


def _refuse_overlaps(
    routes: tuple[NatsRoute, ...], request_subject: str, events: str, where: tuple[str, ...]
) -> None:
    """A message matching two subscriptions would become two tasks: refuse a route whose
    subject some subject could match together with an earlier route's, the request subject
    or the events the egress publishes (``<event_subject_prefix>.>``)."""
    twice = "a message on both would become two tasks"
    taken = [
        (events, "the events of event_subject_prefix", "the ledger's events would become tasks"),
        (request_subject, "request_subject", twice),
    ]
    for index, route in enumerate(routes):
        for subject, name, why in taken:
            if subjects_overlap(route.subject, subject):
                raise ConfigError(
                    f"subject {route.subject!r} overlaps {name} {subject!r}: {why}",
                    (*where, "routes", str(index), "subject"),
                )
        taken.append((route.subject, f"route {index + 1}", twice))


def subjects_overlap(first: str, second: str) -> bool:
    """Whether some concrete subject matches both patterns (``*``: one token, ``>``: one or
    more tokens at the end)."""
    a, b = first.split("."), second.split(".")
    for index in range(max(len(a), len(b))):
        if index >= len(a) or index >= len(b):
            return False  # one pattern ended, the other still wants a token
        x, y = a[index], b[index]
        if ">" in (x, y):
            return True  # the rest, one or more tokens, can be whatever the other needs
        if x != y and "*" not in (x, y):
            return False
    return True


def _route(spec: Any, where: tuple[str, ...], task_types: Mapping[str, Any]) -> NatsRoute:
    if not isinstance(spec, Mapping):
        raise ConfigError("expected a table", where)
    for key in spec:
        if key not in _ROUTE_KEYS:
            raise ConfigError(
                f"unknown key {key!r} (expected one of: {', '.join(sorted(_ROUTE_KEYS))})",
                (*where, key),
            )
    task_type = spec.get("task_type")
    if not isinstance(task_type, str) or task_type not in task_types:
        raise ConfigError(f"unknown task type {task_type!r}", (*where, "task_type"))
    try:
        mode = RouteMode(spec.get("mode", "request"))
    except ValueError:
        raise ConfigError("mode must be request or publish", (*where, "mode")) from None
    timeout = spec.get("timeout", 30.0)
    if (
        not isinstance(timeout, (int, float))
        or isinstance(timeout, bool)
        or not 0 < timeout <= 3600
    ):
        raise ConfigError("timeout must be seconds, from 0 to 3600", (*where, "timeout"))
    return NatsRoute(
        _subject(spec.get("subject"), (*where, "subject")), task_type, mode, float(timeout)
    )


def _subject(value: Any, where: tuple[str, ...], wildcards: bool = True) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError("expected a NATS subject", where)
    tokens = value.split(".")
    for index, token in enumerate(tokens):
        if not _SUBJECT_TOKEN.fullmatch(token) or (token == ">" and index != len(tokens) - 1):
            raise ConfigError(f"{value!r} is not a valid NATS subject", where)
        if not wildcards and token in ("*", ">"):
            raise ConfigError(f"{value!r} may not hold wildcards", where)
    return value
