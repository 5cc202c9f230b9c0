"""Registry versions with worker nodes on one schema, on a real PostgreSQL: a version
applied while two nodes run is taken by both without a restart (each reports it, a new
queue is served, a new task type runs, its events carry the version); a node started with
a new file records it, one started with an old file runs the latest, one whose file would
break live work does not start. Waits poll with a deadline; nothing is timed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from execution_ledger.adapters.config_file import load_config
from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.postgres import task_queries
from execution_ledger.adapters.registry_follower import registry_versions
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.registry_change import RegistryChangeRefused
from execution_ledger.domain.registry_history import registry_history_id
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from tests.adapters.http.live_server import LiveServer

V1 = """
[queues.default]

[task_types.echo]
adapter = "python"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
"""
V2 = (
    V1
    + """
[queues.extra]
concurrency = 2

[task_types.greet]
adapter = "python"
queue = "extra"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
"""
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def runtimes(ledger_env: None, tmp_path: Path) -> Iterator[list[Runtime]]:
    """Two runtimes on one schema, as two processes would have, both with file V1."""
    path = write(tmp_path, "v1.toml", V1)
    opened = [open_runtime(path, pool_size=3), open_runtime(path, pool_size=3)]
    yield opened
    for runtime in opened:
        runtime.close()


def node_versions(runtime: Runtime) -> dict[str, int | None]:
    return {w["worker"]: w["registry_version"] for w in task_queries.worker_nodes(runtime.store)}


async def until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``condition`` (a blocking call) until it gives something true."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def run_nodes(nodes: list[WorkerNode], scenario: Callable[[], Any]) -> None:
    """Run ``nodes`` while ``scenario()`` (a coroutine function) runs; a node that crashes
    fails it."""

    async def main() -> None:
        stop = asyncio.Event()
        running = [asyncio.create_task(node.run(stop)) for node in nodes]
        try:
            story = asyncio.create_task(scenario())
            await asyncio.wait([story, *running], return_when=asyncio.FIRST_COMPLETED)
            for task in running:
                if task.done():
                    task.result()
            await story
        finally:
            stop.set()
            await asyncio.gather(*running, return_exceptions=True)

    asyncio.run(main())


def test_two_nodes_take_a_new_version_without_a_restart(
    runtimes: list[Runtime], tmp_path: Path
) -> None:
    first, second = runtimes
    nodes = [WorkerNode(rt, registry_interval=0.1) for rt in runtimes]
    ids = [node.worker_id for node in nodes]
    greeted: dict[str, Any] = {}

    async def scenario() -> None:
        await until(lambda: set(node_versions(first).values()) == {1}, "both nodes on 1")
        applied = await asyncio.to_thread(
            registry_versions(first).apply, load_config(write(tmp_path, "v2.toml", V2)), "ops"
        )
        assert (applied.version, applied.recorded) == (2, True)
        await until(lambda: set(node_versions(first).values()) == {2}, "both nodes on 2")
        # The second process's ledger took the new type, its node the new queue.
        task = await asyncio.to_thread(
            second.ledger.enqueue, TaskRequest(type_name="greet", args={"hi": 1})
        )
        done = await until(
            lambda: (t := second.ledger.task(task.id)).state is TaskState.SUCCEEDED and t,
            "the new type's task to succeed",
        )
        greeted["task"] = done

    run_nodes(nodes, scenario)
    assert set(node_versions(first)) == set(ids)
    task = greeted["task"]
    assert task.result == {"hi": 1}
    assert (task.enqueued_registry_version, task.run_registry_version) == (2, 2)
    history = second.ledger.history(task.id)
    started = [e.event for e in history if type(e.event).__name__ == "TaskStarted"]
    assert started[0].registry_version == 2  # type: ignore[attr-defined]
    assert set(nodes[0].queues) == set(nodes[1].queues) == {"default", "extra"}

    # The node list shows the version each runs, and flags one behind the latest.
    write(tmp_path, "v3.toml", V2 + "\n[queues.third]\n")
    registry_versions(first).apply(load_config(tmp_path / "v3.toml"), "ops")
    with LiveServer(second) as live, live.client() as client:
        listed = client.get("/v1/workers").json()
        shown_task = client.get(f"/v1/tasks/{task.id}").json()
    assert shown_task["registry_version"] == {"enqueued": 2, "run": 2}
    assert listed["registry_version"] == 3
    shown = {w["worker"]: (w["registry_version"], w["registry_current"]) for w in listed["workers"]}
    assert shown == {ids[0]: (2, False), ids[1]: (2, False)}
    assert all(set(w["queues"]) == {"default", "extra"} for w in listed["workers"])


def test_a_node_records_a_new_file_and_one_with_an_old_file_runs_the_latest(
    ledger_env: None, tmp_path: Path
) -> None:
    old, new = write(tmp_path, "v1.toml", V1), write(tmp_path, "v2.toml", V2)
    for path, expected in ((old, 1), (new, 2), (old, 2), (new, 2)):
        runtime = open_runtime(path, pool_size=3)
        try:
            node = WorkerNode(runtime, registry_interval=0.1)

            async def reported(
                rt: Runtime = runtime, worker: str = node.worker_id, version: int = expected
            ) -> None:
                await until(lambda: node_versions(rt).get(worker) == version, "the version")

            run_nodes([node], reported)
            # An old file runs the latest version's registry: the new queue is served.
            assert ("extra" in node.queues) is (expected == 2)
            assert runtime.ledger.registry.version == expected
        finally:
            runtime.close()
    check = open_runtime(old, pool_size=2)
    try:
        changes = [
            r.event
            for r in check.store.history(registry_history_id())
            if type(r.event).__name__ == "RegistryChanged"
        ]
        assert [(e.version, e.by.startswith("node ")) for e in changes] == [(1, True), (2, True)]  # type: ignore[attr-defined]
    finally:
        check.close()


def test_a_node_whose_file_would_break_queued_work_does_not_start(
    ledger_env: None, tmp_path: Path
) -> None:
    recorded = write(tmp_path, "v2.toml", V2)
    runtime = open_runtime(recorded, pool_size=3)
    try:
        registry_versions(runtime).apply(load_config(recorded), "ops")
        runtime.ledger.enqueue(TaskRequest(type_name="greet"))
    finally:
        runtime.close()
    # A file never recorded that drops greet and its queue, which a queued task still needs.
    breaking = write(tmp_path, "smaller.toml", V1 + "\n[queues.other]\n")
    runtime = open_runtime(breaking, pool_size=3)
    try:
        node = WorkerNode(runtime, registry_interval=0.1)
        with pytest.raises(RegistryChangeRefused) as refused:
            run_nodes([node], lambda: asyncio.sleep(30))
        assert refused.value.reasons == [
            "task type 'greet' is removed but 1 of its tasks are live",
            "queue 'extra' is removed but holds 1 live tasks",
        ]
        assert registry_versions(runtime).latest_number() == 1
    finally:
        runtime.close()


def test_a_version_a_node_cannot_run_leaves_it_on_its_own_and_says_so(
    ledger_env: None, tmp_path: Path
) -> None:
    path = write(tmp_path, "v1.toml", V1)
    runtime = open_runtime(path, pool_size=3)
    try:
        registry_versions(runtime).apply(load_config(path), "ops")
        # Version 2 as a node with other code would record it: a table this code refuses.
        history: Any = None
        for recorded in runtime.store.history(registry_history_id()):
            history = recorded.event.mutate(history)
        unknown = {"queues": {"default": {"weight": 3}}}
        history.change(unknown, "sha256:" + "0" * 64, "newer-node", "other.toml")
        runtime.store.save(history)
        first = WorkerNode(runtime, registry_interval=0.1)

        async def keeps_one() -> None:
            await until(lambda: first.registry_follower.follower.refused == 2, "the refusal")
            await until(lambda: node_versions(runtime).get(first.worker_id) == 1, "version 1")

        run_nodes([first], keeps_one)
        assert runtime.ledger.registry.version == 1
    finally:
        runtime.close()
    restarted = open_runtime(path, pool_size=3)  # its file is version 1, the latest is 2
    try:
        second = WorkerNode(restarted, registry_interval=0.1)

        async def runs_its_own() -> None:
            await until(lambda: node_versions(restarted).get(second.worker_id) == 1, "version 1")

        run_nodes([second], runs_its_own)
        assert restarted.ledger.registry.version == 1
    finally:
        restarted.close()
