"""The claim's queue lock is exclusive only where the queue's limit could be reached
(``candidates.py``): claims of a queue that its registered workers cannot fill run side by
side; claims of one they could fill take turns, and a worker that joins turns the next
claim exclusive without stalling it or passing the limit. Another node's claim in flight is
stood in for by a transaction of the test holding the queue's lock as a claim holds it."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.postgres.dispatch import PostgresDispatch
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.execution import ClaimedAttempt
from execution_ledger.domain.submission import TaskRequest
from tests.helpers import eventually
from tests.processors.worker_harness import runtime_with_config

WAIT = 30.0  # seconds before a wait for something that must happen fails

CONFIG = textwrap.dedent(
    """
    [queues.wide]
    concurrency = 8

    [queues.narrow]
    concurrency = 4

    [task_types.echo_wide]
    adapter = "python"
    queue = "wide"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }

    [task_types.echo_narrow]
    adapter = "python"
    queue = "narrow"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
    """
)


@pytest.fixture
def rt(ledger_env: None, tmp_path: Path) -> Iterator[Runtime]:
    runtime = runtime_with_config(tmp_path, CONFIG)
    yield runtime
    runtime.close()


def worker(rt: Runtime, name: str, concurrency: int) -> PostgresDispatch:
    """A registered worker's dispatch (as ``WorkerNode.run`` registers its node)."""
    dispatch = PostgresDispatch(rt.store, rt.settings.config.registry, clock=utc_now)
    dispatch.register_worker(name, "host", 1, ["wide", "narrow"], concurrency)
    return dispatch


def enqueue(rt: Runtime, type_name: str, count: int) -> None:
    rt.ledger.enqueue_graph([TaskRequest(type_name, {"i": i}) for i in range(count)])


@contextmanager
def claim_in_flight(rt: Runtime, database_url: str, queue: str) -> Iterator[int]:
    """Another claim of ``queue`` in flight under a shared lock; yields its backend's pid."""
    key = f"{rt.settings.schema}:claim:{queue}"
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, 0))", (key,))
        yield conn.info.backend_pid
        conn.rollback()


class Claim:
    """``dispatch.claim`` in a thread of its own."""

    def __init__(self, call: Callable[[], list[ClaimedAttempt]]) -> None:
        self.result: list[ClaimedAttempt] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call: Callable[[], list[ClaimedAttempt]]) -> None:
        try:
            self.result = call()
        except BaseException as error:  # handed to the test
            self.error = error

    def finished(self, timeout: float = WAIT) -> list[ClaimedAttempt]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the claim never finished"
        assert self.error is None, self.error
        assert self.result is not None
        return self.result


def waiting_for_a_lock(database_url: str, holder: int) -> bool:
    """Whether some backend waits for an advisory lock that ``holder`` holds."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row: Any = conn.execute(
            "SELECT count(*) FROM pg_locks w JOIN pg_locks h "
            "ON h.locktype = 'advisory' AND h.objid = w.objid AND h.classid = w.classid "
            "AND h.pid = %s AND h.granted WHERE w.locktype = 'advisory' AND NOT w.granted",
            (holder,),
        ).fetchone()
    return bool(row[0])


def running(rt: Runtime, queue: str) -> int:
    with rt.store.transaction() as cur:
        row = cur.execute(
            f'SELECT count(*) AS n FROM "{rt.settings.schema}".running_attempts WHERE queue = %s',
            (queue,),
        ).fetchone()
    assert row is not None
    return int(row["n"])


def test_claims_of_a_queue_its_workers_cannot_fill_run_side_by_side(
    rt: Runtime, database_url: str
) -> None:
    enqueue(rt, "echo_wide", 6)
    one = worker(rt, "w1", 4)  # the only worker: 4 of the queue's 8 at most
    assert len(one.claim(["wide"], 1, "w1")) == 1  # this round learns the queue's reach
    with claim_in_flight(rt, database_url, "wide"):
        claim = Claim(lambda: one.claim(["wide"], 2, "w1"))
        assert len(claim.finished()) == 2  # while the other claim still holds its lock
    assert running(rt, "wide") == 3


def test_claims_of_a_queue_its_workers_could_fill_take_turns(
    rt: Runtime, database_url: str
) -> None:
    enqueue(rt, "echo_narrow", 6)
    one = worker(rt, "w1", 4)
    worker(rt, "w2", 4)  # 8 slots against the queue's 4
    assert len(one.claim(["narrow"], 1, "w1")) == 1
    with claim_in_flight(rt, database_url, "narrow") as other:
        claim = Claim(lambda: one.claim(["narrow"], 2, "w1"))
        eventually(lambda: waiting_for_a_lock(database_url, other), "the claim waits its turn")
    assert len(claim.finished()) == 2
    assert running(rt, "narrow") == 3


def test_a_worker_that_joins_makes_the_next_claim_take_its_turn_within_the_limit(
    rt: Runtime, database_url: str
) -> None:
    enqueue(rt, "echo_narrow", 8)
    one = worker(rt, "w1", 4)  # alone, it cannot pass the queue's 4
    assert len(one.claim(["narrow"], 2, "w1")) == 2  # the next lock would be shared
    two = worker(rt, "w2", 4)  # now the two could
    # w1's round takes the shared lock it chose, finds the reach past the limit, starts
    # nothing from it and claims the queue again under the exclusive lock: no stall.
    assert len(one.claim(["narrow"], 2, "w1")) == 2
    assert two.claim(["narrow"], 4, "w2") == []  # the queue's 4 are taken
    assert running(rt, "narrow") == 4
    with claim_in_flight(rt, database_url, "narrow") as other:  # and now they take turns
        claim = Claim(lambda: one.claim(["narrow"], 1, "w1"))
        eventually(lambda: waiting_for_a_lock(database_url, other), "the claim waits its turn")
    assert claim.finished() == []


def last_seen_ago(rt: Runtime, name: str, minutes: int) -> None:
    with rt.store.transaction() as cur:
        cur.execute(
            f'UPDATE "{rt.settings.schema}".worker_nodes '
            "SET last_seen = now() - make_interval(mins => %s) WHERE worker = %s",
            (minutes, name),
        )


def test_a_worker_long_gone_stops_counting_but_its_running_attempts_still_count(
    rt: Runtime, database_url: str
) -> None:
    enqueue(rt, "echo_narrow", 6)
    gone = worker(rt, "gone", 4)
    assert len(gone.claim(["narrow"], 1, "gone")) == 1  # one attempt it still holds
    last_seen_ago(rt, "gone", 20)
    one = worker(rt, "w1", 3)  # 3 slots + the gone worker's 1 running: the queue's 4
    assert len(one.claim(["narrow"], 1, "w1")) == 1
    with claim_in_flight(rt, database_url, "narrow"):
        assert len(Claim(lambda: one.claim(["narrow"], 2, "w1")).finished()) == 2


def test_a_worker_not_seen_lately_takes_its_turn_however_wide_the_queue(
    rt: Runtime, database_url: str
) -> None:
    enqueue(rt, "echo_wide", 4)
    one = worker(rt, "w1", 2)
    assert len(one.claim(["wide"], 1, "w1")) == 1
    last_seen_ago(rt, "w1", 2)  # its heartbeats stopped reaching the database
    assert len(one.claim(["wide"], 1, "w1")) == 1  # learns: its next lock is exclusive
    with claim_in_flight(rt, database_url, "wide") as other:
        claim = Claim(lambda: one.claim(["wide"], 1, "w1"))
        eventually(lambda: waiting_for_a_lock(database_url, other), "the claim waits its turn")
    assert len(claim.finished()) == 1
