"""When each cron schedule was last looked at, and whether it is paused, in memory: a test
double of ``adapters/postgres/schedule_clock.py``'s ``PostgresScheduleClock`` honouring the
same contract (``tests/contract/test_schedule_clock_contract.py``), for the
``ScheduleClock`` protocol of ``processors/cron.py``.

The time only ever moves forward, whoever writes. ``set_paused`` stands for the flag that
``Ledger.pause_schedule`` / ``resume_schedule`` write with the schedule's event on
PostgreSQL; a schedule paused before it was ever looked at is listed with no time.
"""

from __future__ import annotations

import threading
from datetime import datetime

from execution_ledger.processors.cron import Look


class InMemoryScheduleClock:
    def __init__(self) -> None:
        self._looks: dict[str, Look] = {}
        self._lock = threading.Lock()

    def looks(self) -> dict[str, Look]:
        """Each known schedule's last look (None: never looked at) and paused flag."""
        with self._lock:
            return dict(self._looks)

    def looked(self, name: str, at: datetime) -> None:
        with self._lock:
            look = self._looks.get(name, Look(None))
            later = at if look.at is None else max(look.at, at)
            self._looks[name] = Look(later, look.paused)

    def set_paused(self, name: str, paused: bool) -> None:
        with self._lock:
            self._looks[name] = Look(self._looks.get(name, Look(None)).at, paused)
