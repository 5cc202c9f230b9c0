"""Telling an outcome the store refused from a store that is away.

The worker records the outcomes of a round together. If the database is away (a failover,
a restart), they wait for the next round; if it refused them, one of them cannot be stored,
and the worker records each alone so that it never holds back the others, recording the one
still refused as the failure ``UnstorableOutcome`` (``Worker._complete_each``). Results and
messages are made storable before they get here (``domain/storable.py``): this is for what
that does not foresee.
"""

from __future__ import annotations

from eventsourcing.persistence import (
    ConnectionPoolClosedError,
    InterfaceError,
    OperationalError,
    WaitInterruptedError,
)

from execution_ledger.domain.execution import AttemptOutcome, Failure

# The store could not be reached, lost its connection (a deadlock or a timeout is an
# ``OperationalError`` too), or this process is closing its pool: nothing was refused.
_AWAY = (
    OperationalError,
    InterfaceError,
    ConnectionPoolClosedError,
    WaitInterruptedError,
    ConnectionError,
    TimeoutError,
)


def database_away(error: BaseException) -> bool:
    """True when ``error`` says the store is unreachable, not that it refused the data."""
    return isinstance(error, _AWAY)


def unstorable_outcome(outcome: AttemptOutcome) -> AttemptOutcome:
    """The attempt as failed with ``UnstorableOutcome`` (not retried: its code would give
    the same again), in place of an outcome the store refuses."""
    return AttemptOutcome(
        outcome.task_id,
        outcome.attempt,
        Failure(
            "UnstorableOutcome",
            "the attempt ended, but its outcome could not be stored (see the worker's log)",
            retryable=False,
        ),
    )
