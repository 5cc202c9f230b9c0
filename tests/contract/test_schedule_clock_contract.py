"""The ``ScheduleClock`` contract (``processors/cron.py``): when each schedule was last
looked at, only ever forward, and whether it is paused — on PostgreSQL and on the in-memory
double alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from execution_ledger.processors.cron import Look
from tests.contract.conftest import Backend

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_schedule_never_looked_at_is_not_listed(backend: Backend) -> None:
    assert backend.schedule_clock.looks() == {}


def test_a_look_is_kept_per_schedule(backend: Backend) -> None:
    backend.schedule_clock.looked("nightly", AT)
    backend.schedule_clock.looked("hourly", AT + timedelta(minutes=5))
    assert backend.schedule_clock.looks() == {
        "nightly": Look(AT),
        "hourly": Look(AT + timedelta(minutes=5)),
    }


def test_the_look_time_only_moves_forward(backend: Backend) -> None:
    backend.schedule_clock.looked("nightly", AT)
    backend.schedule_clock.looked("nightly", AT - timedelta(hours=1))  # a slower node
    assert backend.schedule_clock.looks()["nightly"].at == AT
    backend.schedule_clock.looked("nightly", AT + timedelta(hours=1))
    assert backend.schedule_clock.looks()["nightly"].at == AT + timedelta(hours=1)


def test_a_paused_schedule_reads_paused_and_keeps_its_time(backend: Backend) -> None:
    backend.schedule_clock.looked("nightly", AT)
    backend.pause_schedule("nightly")
    assert backend.schedule_clock.looks()["nightly"] == Look(AT, paused=True)
    backend.schedule_clock.looked("nightly", AT + timedelta(hours=1))  # looks go on
    assert backend.schedule_clock.looks()["nightly"] == Look(AT + timedelta(hours=1), True)


def test_a_schedule_paused_before_any_look_is_listed_without_a_time(backend: Backend) -> None:
    backend.pause_schedule("nightly")
    assert backend.schedule_clock.looks() == {"nightly": Look(None, paused=True)}
