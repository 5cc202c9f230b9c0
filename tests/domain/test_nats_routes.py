"""NATS routes of the registry: subjects that could both match one message are refused."""

from __future__ import annotations

import pytest

from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.nats_routes import build_nats_settings, subjects_overlap

TYPES = {"a": object(), "b": object()}


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("orders.new", "orders.new", True),
        ("orders.new", "orders.old", False),
        ("orders.*", "orders.new", True),
        ("orders.*", "orders.new.eu", False),
        ("orders.>", "orders.new.eu", True),
        ("orders.>", "orders", False),
        ("*.new", "orders.*", True),
        ("*.new", "orders.old", False),
        (">", "anything.at.all", True),
        ("a.*.c", "a.b.d", False),
        ("a.*.>", "a.b", False),
        ("a.*.>", "a.b.c.d", True),
    ],
)
def test_subjects_overlap_when_one_message_could_match_both(
    first: str, second: str, overlap: bool
) -> None:
    assert subjects_overlap(first, second) is overlap
    assert subjects_overlap(second, first) is overlap


def routes(*subjects: str, request_subject: str = "execution.request.task") -> dict[str, object]:
    return {
        "request_subject": request_subject,
        "routes": [{"subject": s, "task_type": "a"} for s in subjects],
    }


def test_routes_on_distinct_subjects_are_accepted() -> None:
    settings = build_nats_settings(routes("orders.new", "orders.*.eu", "audit.>"), TYPES)
    assert [r.subject for r in settings.routes] == ["orders.new", "orders.*.eu", "audit.>"]


def test_a_route_overlapping_an_earlier_one_is_refused_at_its_subject() -> None:
    with pytest.raises(ConfigError) as caught:
        build_nats_settings(routes("orders.new", "audit.x", "orders.*"), TYPES)
    assert caught.value.where == ("nats", "routes", "2", "subject")
    assert "'orders.*' overlaps route 1 'orders.new'" in caught.value.reason


def test_a_route_overlapping_the_request_subject_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        build_nats_settings(routes("execution.>"), TYPES)
    assert "overlaps request_subject 'execution.request.task'" in caught.value.reason


def test_the_publish_routes_stream_is_named_after_the_egress_stream_unless_set() -> None:
    derived = build_nats_settings({"stream": "EVENTS"}, TYPES)
    named = build_nats_settings({"stream": "EVENTS", "ingress_stream": "ORDERS_IN"}, TYPES)

    assert derived.publish_stream == "EVENTS_INGRESS"
    assert named.publish_stream == "ORDERS_IN"
    assert build_nats_settings(None, TYPES).publish_stream == "LEDGER_EVENTS_INGRESS"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("has space", "ingress_stream must be a JetStream stream name"),
        ("", "ingress_stream must be a JetStream stream name"),
        (7, "ingress_stream must be a JetStream stream name"),
        ("EVENTS", "ingress_stream must differ from stream"),
    ],
)
def test_a_bad_ingress_stream_is_refused_at_its_key(value: object, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_nats_settings({"stream": "EVENTS", "ingress_stream": value}, TYPES)
    assert caught.value.where == ("nats", "ingress_stream")
    assert reason in caught.value.reason


def test_a_route_on_the_events_subjects_is_refused() -> None:
    spec = {"event_subject_prefix": "ledger.events", **routes("audit.x", "ledger.*.TaskEnqueued")}
    with pytest.raises(ConfigError) as caught:
        build_nats_settings(spec, TYPES)
    assert caught.value.where == ("nats", "routes", "1", "subject")
    assert "the ledger's events would become tasks" in caught.value.reason


def test_a_route_whose_task_type_is_not_a_name_is_refused_at_its_key() -> None:
    spec = {"routes": [{"subject": "orders.new", "task_type": ["a"]}]}
    with pytest.raises(ConfigError) as caught:
        build_nats_settings(spec, TYPES)
    assert caught.value.where == ("nats", "routes", "0", "task_type")
    assert caught.value.reason == "unknown task type ['a']"
