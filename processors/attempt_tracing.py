"""What the worker asks of telemetry (``adapters/telemetry/`` gives it when traces are
configured; with none, the worker is given nothing and calls nothing):

- ``run(attempt)`` when an attempt starts running: its ``ledger.run`` span, whose ``trace``
  is the context the attempt's adapter and children continue, ended with the outcome;
- ``round(began_ns, claimed, outcomes)`` after a worker round that claimed or recorded
  something: its ``ledger.claim`` span for each attempt it started and ``ledger.record``
  for each outcome it recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from execution_ledger.domain.execution import AttemptOutcome, ClaimedAttempt


class RunSpan(Protocol):
    @property
    def trace(self) -> Mapping[str, str] | None:
        """The attempt's own context (``traceparent``, ``tracestate``)."""
        ...

    def end(self, outcome: AttemptOutcome | None) -> None:
        """The attempt ended: with ``outcome``, or None when stopped (cancelled, timed
        out by the watchdog) and recorded elsewhere."""
        ...


class AttemptTracing(Protocol):
    def run(self, attempt: ClaimedAttempt) -> RunSpan: ...

    def round(
        self,
        began_ns: int,
        claimed: Sequence[ClaimedAttempt],
        outcomes: Sequence[AttemptOutcome],
    ) -> None: ...
