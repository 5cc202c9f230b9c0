"""Rate limits and fair queues at claim time, on a real PostgreSQL: a limit holds across two
worker nodes (and across two queues claimed by two dispatchers), the tasks it holds back
say why in the task view, over HTTP and in ``ledger show``; a fair queue gives a small
tenant's tasks their turn ahead of a big tenant's backlog. Starts are counted from the
stored ``TaskStarted`` events, with a period of an hour, so nothing depends on timing."""

from __future__ import annotations

import dataclasses
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from psycopg import sql

from execution_ledger.adapters.cli.main import main
from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.postgres.dispatch import PostgresDispatch
from execution_ledger.adapters.postgres.task_queries import TaskFilter, get_task_row, list_tasks
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.errors import SchemaViolation
from execution_ledger.domain.submission import TaskRequest
from tests.adapters.http.live_server import LiveServer
from tests.processors.worker_harness import run_built_nodes_until, wait_until

CONFIG = textwrap.dedent(
    """
    [defaults.timeouts]
    start_to_close = "20s"
    heartbeat = "5s"

    [queues.mail]
    concurrency = 100

    [queues.billing]
    concurrency = 100

    [queues.fair]
    concurrency = 100
    fair_key = "tenant:{tenant}"

    [queues.plain]
    concurrency = 100

    [queues.quick]
    concurrency = 100

    [queues.shared]
    concurrency = 100
    fair_key = "tenant:{tenant}"

    [task_types.send]
    adapter = "python"
    queue = "mail"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }

    [task_types.charge]
    adapter = "python"
    queue = "billing"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }

    [task_types.job]
    adapter = "python"
    queue = "fair"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }

    [task_types.plain_job]
    adapter = "python"
    queue = "plain"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }

    [task_types.ping]
    adapter = "python"
    queue = "quick"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }

    [task_types.shared_job]
    adapter = "python"
    queue = "shared"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }

    [rate_limits.shared_tenant]
    queue = "shared"
    key = "tenant:{tenant}"
    limit = 1
    period = "1h"

    [rate_limits.per_tenant]
    task_type = "send"
    key = "tenant:{tenant}"
    limit = 5
    period = "1h"

    [rate_limits.per_account]
    key = "account:{account}"
    limit = 4
    period = "1h"

    [rate_limits.quick]
    queue = "quick"
    limit = 1
    period = "1s"
    """
)
HELD = "rate limit per_tenant (tenant:a): 5 per 1h, next slot at "


@pytest.fixture
def config_path(tmp_path: Path, ledger_env: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger.toml"
    path.write_text(CONFIG)
    monkeypatch.setenv("LEDGER_CONFIG", str(path))
    return path


@pytest.fixture
def runtime(config_path: Path) -> Iterator[Runtime]:
    rt = open_runtime(config_path, pool_size=4)
    yield rt
    rt.close()


@pytest.fixture
def second_runtime(config_path: Path) -> Iterator[Runtime]:
    """Another process's view of the same schema: its own pool, store and dispatcher."""
    rt = open_runtime(config_path, pool_size=4)
    yield rt
    rt.close()


def dispatch_of(runtime: Runtime) -> PostgresDispatch:
    return PostgresDispatch(runtime.store, runtime.settings.config.registry, clock=utc_now)


def enqueue(runtime: Runtime, type_name: str, count: int, **args: object) -> list[UUID]:
    return [runtime.ledger.enqueue(TaskRequest(type_name, dict(args))).id for _ in range(count)]


def enqueue_many(runtime: Runtime, type_name: str, count: int, **args: object) -> list[UUID]:
    """``count`` tasks in one save, in their enqueue order (their ``seq``)."""
    requests = [TaskRequest(type_name, dict(args)) for _ in range(count)]
    ids = [task.id for task in runtime.ledger.enqueue_graph(requests)]
    with runtime.store.transaction() as cur:
        rows = cur.execute(
            sql.SQL("SELECT task_id FROM {} WHERE task_id = ANY(%s) ORDER BY seq").format(
                runtime.store.dispatch_queue.table
            ),
            (ids,),
        ).fetchall()
    return [row["task_id"] for row in rows]


def starts(runtime: Runtime, task_ids: list[UUID]) -> int:
    """The ``TaskStarted`` events stored for these tasks."""
    return sum(
        type(recorded.event).__name__ == "TaskStarted"
        for task_id in task_ids
        for recorded in runtime.ledger.history(task_id)
    )


def claim_together(dispatches: list[tuple[PostgresDispatch, list[str]]], rounds: int) -> None:
    """Each dispatcher claims ``rounds`` times from its queues, all of them at once (a
    barrier before every round), recording the outcomes of what it started."""
    barrier = threading.Barrier(len(dispatches))
    errors: list[BaseException] = []

    def claimer(dispatch: PostgresDispatch, queues: list[str], worker: str) -> None:
        try:
            for _ in range(rounds):
                barrier.wait(10)
                dispatch.claim(queues, 3, worker)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [
        threading.Thread(target=claimer, args=(dispatch, queues, f"w{n}"))
        for n, (dispatch, queues) in enumerate(dispatches)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors


def test_two_worker_nodes_start_exactly_the_limit_and_hold_the_rest_with_the_reason(
    runtime: Runtime, second_runtime: Runtime
) -> None:
    tenant_a = enqueue(runtime, "send", 12, tenant="a")
    tenant_b = enqueue(runtime, "send", 3, tenant="b")

    def done() -> bool:
        rows = list_tasks(runtime.store, TaskFilter(type_name="send"), limit=50).rows
        return (
            Counter(row["state"] for row in rows) == Counter(succeeded=8, ready=7)
            and sum(bool(row["held_by"]) for row in rows) == 7
        )

    run_built_nodes_until(
        lambda: [
            WorkerNode(runtime, projection_process=False, concurrency=4),
            WorkerNode(second_runtime, projection_process=False, concurrency=4),
        ],
        done,
    )
    assert starts(runtime, tenant_a) == 5
    assert starts(runtime, tenant_b) == 3
    runtime.catch_up()
    held = [get_task_row(runtime.store, task_id) for task_id in tenant_a]
    waiting = [row for row in held if row["state"] == "ready"]
    assert len(waiting) == 7
    assert all(row["held_by"].startswith(HELD) for row in waiting)
    assert all(row["held_by"] is None for row in held if row["state"] == "succeeded")


def test_a_key_limit_holds_across_two_queues_claimed_by_two_dispatchers_at_once(
    runtime: Runtime, second_runtime: Runtime
) -> None:
    """Each dispatcher claims from its own queue, so no queue lock orders them: only the
    bucket's own lock keeps the count exact."""
    mail = enqueue(runtime, "send", 10, tenant="t", account=7)
    billing = enqueue(runtime, "charge", 10, account=7)
    other_account = enqueue(runtime, "charge", 2, account=8)
    claim_together(
        [(dispatch_of(runtime), ["mail"]), (dispatch_of(second_runtime), ["billing"])], rounds=8
    )
    assert starts(runtime, mail) + starts(runtime, billing) == 4
    assert starts(runtime, other_account) == 2


def test_the_same_queue_claimed_by_two_dispatchers_at_once_starts_the_limit_only(
    runtime: Runtime, second_runtime: Runtime
) -> None:
    tasks = enqueue(runtime, "send", 20, tenant="a")
    claim_together(
        [(dispatch_of(runtime), ["mail"]), (dispatch_of(second_runtime), ["mail"])], rounds=6
    )
    assert starts(runtime, tasks) == 5


def test_the_reason_shows_over_http_in_the_list_and_in_ledger_show(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = enqueue(runtime, "send", 7, tenant="a")
    dispatch_of(runtime).claim(["mail"], 10, "w1")
    held = [task_id for task_id in tasks if runtime.store.load(task_id).state.value == "ready"]
    assert len(held) == 2
    runtime.catch_up()
    with LiveServer(runtime) as server, server.client() as client:
        one = client.get(f"/v1/tasks/{held[0]}").json()
        listed = client.get("/v1/tasks", params={"type": "send", "limit": 50}).json()["tasks"]
        running = client.get(f"/v1/tasks/{tasks[0]}").json()
    assert one["held_by"].startswith(HELD)
    assert running["state"] == "running" and running["held_by"] is None
    reasons = {row["id"]: row["held_by"] for row in listed}
    assert {task_id for task_id, reason in reasons.items() if reason} == {str(t) for t in held}
    assert main(["show", str(held[1])]) == 0
    assert "held_by" in capsys.readouterr().out
    assert main(["show", str(held[1]), "--json"]) == 0
    assert '"held_by": "rate limit per_tenant (tenant:a): 5 per 1h' in capsys.readouterr().out


def test_a_held_task_cancelled_or_started_loses_its_reason(runtime: Runtime) -> None:
    tasks = enqueue(runtime, "send", 6, tenant="a")
    dispatch = dispatch_of(runtime)
    dispatch.claim(["mail"], 10, "w1")
    held = next(t for t in tasks if runtime.store.load(t).state.value == "ready")
    runtime.ledger.cancel(held)
    runtime.catch_up()
    assert get_task_row(runtime.store, held)["held_by"] is None


def test_held_tasks_do_not_keep_other_buckets_waiting(runtime: Runtime) -> None:
    """Tenant a's bucket is full; tenant b's tasks behind a's backlog in the same queue
    start in the next rounds (a full bucket's candidates are passed over, not waited on)."""
    tenant_a = enqueue(runtime, "send", 8, tenant="a")
    tenant_b = enqueue(runtime, "send", 2, tenant="b")
    dispatch = dispatch_of(runtime)
    dispatch.claim(["mail"], 10, "w1")
    assert starts(runtime, tenant_a) == 5 and starts(runtime, tenant_b) == 2


def test_a_held_task_starts_once_its_bucket_has_a_slot_again(runtime: Runtime) -> None:
    first, second = enqueue(runtime, "ping", 2)
    dispatch = dispatch_of(runtime)
    assert len(dispatch.claim(["quick"], 10, "w1")) == 1
    assert dispatch.claim(["quick"], 10, "w1") == []
    waiting = second if runtime.store.load(second).state.value == "ready" else first
    runtime.catch_up()
    assert get_task_row(runtime.store, waiting)["held_by"].startswith(
        "rate limit quick: 1 per 1s, next slot at "
    )
    # Once the slot it names has passed, the reason is no longer shown.
    wait_until(lambda: get_task_row(runtime.store, waiting)["held_by"] is None, timeout=5)
    claimed: list[object] = []
    deadline = utc_now().timestamp() + 10
    while not claimed and utc_now().timestamp() < deadline:
        claimed = list(dispatch.claim(["quick"], 10, "w1"))
    assert [c.task_id for c in claimed] == [waiting]  # type: ignore[attr-defined]
    times = sorted(
        recorded.event.timestamp
        for task_id in (first, second)
        for recorded in runtime.ledger.history(task_id)
        if type(recorded.event).__name__ == "TaskStarted"
    )
    assert (times[1] - times[0]).total_seconds() >= 0.9


def test_a_task_whose_args_cannot_fill_its_limit_key_is_refused_and_nothing_stored(
    runtime: Runtime,
) -> None:
    with pytest.raises(SchemaViolation, match=r"rate limit 'per_tenant'.*needs the argument"):
        runtime.ledger.enqueue(TaskRequest("send", {"to": "x"}))
    runtime.catch_up()
    assert list_tasks(runtime.store, TaskFilter(type_name="send")).rows == []


def test_a_fair_queue_starts_a_small_tenant_within_the_first_round(runtime: Runtime) -> None:
    big = enqueue_many(runtime, "job", 200, tenant="a")
    small = enqueue(runtime, "job", 5, tenant="b")
    claimed = dispatch_of(runtime).claim(["fair"], 10, "w1")
    assert {c.task_id for c in claimed} >= set(small)
    assert len(claimed) == 10
    assert [c.task_id for c in claimed if c.task_id in big] == big[:5]  # a's in its order


def test_a_queue_without_fairness_starts_the_backlog_first(runtime: Runtime) -> None:
    """The same submission in a plain queue: tenant b waits behind a's 200 tasks."""
    enqueue_many(runtime, "plain_job", 200, tenant="a")
    small = enqueue(runtime, "plain_job", 5, tenant="b")
    claimed = dispatch_of(runtime).claim(["plain"], 10, "w1")
    assert len(claimed) == 10 and not {c.task_id for c in claimed} & set(small)


def test_a_fair_queue_still_takes_higher_priorities_first(runtime: Runtime) -> None:
    enqueue(runtime, "job", 20, tenant="a")
    urgent = [
        runtime.ledger.enqueue(TaskRequest("job", {"tenant": "a"}, priority=10)).id
        for _ in range(3)
    ]
    claimed = dispatch_of(runtime).claim(["fair"], 3, "w1")
    assert [c.task_id for c in claimed] == urgent


def test_a_registry_swapped_between_rounds_applies_its_limits_from_the_next_round(
    runtime: Runtime,
) -> None:
    """As a node does when it takes a new registry version (``registry_follower.py``)."""
    registry = runtime.settings.config.registry
    dispatch = PostgresDispatch(
        runtime.store, dataclasses.replace(registry, rate_limits={}), clock=utc_now
    )
    tasks = enqueue(runtime, "send", 8, tenant="a")
    assert len(dispatch.claim(["mail"], 2, "w1")) == 2
    dispatch.registry = dispatch.candidates.registry = registry
    dispatch.claim(["mail"], 10, "w1")
    assert starts(runtime, tasks) == 2 + 5  # the two unlimited starts were not counted


def test_a_fair_queue_also_runs_tasks_without_a_key(runtime: Runtime) -> None:
    """Tasks queued before the queue had a fair_key (no key at all) and tasks whose args
    lack the key's field (the keyless group) take their turns beside the keyed ones."""
    registry = runtime.settings.config.registry
    unfair = dict(registry.queues)
    unfair["fair"] = dataclasses.replace(registry.queues["fair"], fair_key=None)
    runtime.ledger.registry = dataclasses.replace(registry, queues=unfair)
    before = enqueue(runtime, "job", 2, tenant="a")
    runtime.ledger.registry = registry
    keyed = enqueue_many(runtime, "job", 30, tenant="a")
    keyless = enqueue(runtime, "job", 2)
    assert {runtime.store.load(t).fair_key for t in before + keyless} == {None, ""}
    claimed = [c.task_id for c in dispatch_of(runtime).claim(["fair"], 8, "w1")]
    assert set(before) | set(keyless) <= set(claimed)
    assert len(claimed) == 8 and len(set(claimed) & set(keyed)) == 4


def test_a_fair_queue_keeps_a_lane_in_its_order(runtime: Runtime) -> None:
    lane = [
        runtime.ledger.enqueue(TaskRequest("job", {"tenant": "a"}, lane="one")).id
        for _ in range(3)
    ]
    other = enqueue(runtime, "job", 1, tenant="b")
    claimed = [c.task_id for c in dispatch_of(runtime).claim(["fair"], 10, "w1")]
    assert sorted(claimed) == sorted([lane[0], *other])  # a lane offers its oldest only


def test_over_http_an_enqueue_a_limit_cannot_key_is_422_and_stores_nothing(
    runtime: Runtime,
) -> None:
    with LiveServer(runtime) as server, server.client() as client:
        refused = client.post("/v1/tasks", json={"type": "send", "args": {"to": "x"}})
        listed = client.get("/v1/tasks", params={"type": "send"}).json()["tasks"]
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "schema_violation"
    assert "rate limit 'per_tenant'" in refused.json()["error"]["message"]
    assert listed == []


def test_a_fair_queue_passes_over_tenants_at_their_limit(runtime: Runtime) -> None:
    """Fifteen tenants at their limit, each with a task still queued, fill a round's
    candidates (5 free slots + 10 spare); a new tenant's task behind them starts in the
    next round all the same: the keys of full buckets keyed like the queue are not read."""
    for n in range(15):
        enqueue(runtime, "shared_job", 2, tenant=f"t{n}")
    dispatch = dispatch_of(runtime)
    for _ in range(3):
        assert len(dispatch.claim(["shared"], 5, "w1")) == 5
    (new,) = enqueue(runtime, "shared_job", 1, tenant="new")
    assert [c.task_id for c in dispatch.claim(["shared"], 5, "w1")] == [new]
