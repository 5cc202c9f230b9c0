"""A NATS task that takes its dependencies' results: its subject template and its payload
carry them (``deps``), on a real nats-server with a real worker node."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from execution_ledger.adapters.node import WorkerNode
from execution_ledger.domain.submission import TaskRequest
from tests.adapters.nats.conftest import connected
from tests.processors.worker_harness import runtime_with_config

pytestmark = pytest.mark.asyncio


async def test_a_nats_task_sends_its_inputs_in_its_subject_and_payload(
    ledger_env: None, tmp_path: Path, nats_url: str, names: str
) -> None:
    config = textwrap.dedent(
        f"""
        [task_types.add]
        adapter = "python"
        settings = {{ callable = "execution_ledger.adapters.executors.builtin_tasks:add" }}

        [task_types.notify]
        adapter = "nats"
        inputs = true
        settings = {{ subject = "{names}.sum.{{deps[sum][result][sum]}}", url = "{nats_url}", timeout = 5 }}
        """
    )
    runtime = runtime_with_config(tmp_path, config)
    try:
        async with connected(nats_url) as handler:

            async def answer(msg: Msg) -> None:
                await msg.respond(
                    json.dumps({"subject": msg.subject, "got": json.loads(msg.data)}).encode()
                )

            await handler.subscribe(f"{names}.sum.*", cb=answer)
            await handler.flush()
            first, call = runtime.ledger.enqueue_graph(
                [
                    TaskRequest("add", {"a": 4, "b": 5}, ref="sum"),
                    TaskRequest("notify", {"note": "hi"}, ref="call", depends_on=("sum",)),
                ]
            )
            stop = asyncio.Event()
            node = asyncio.create_task(WorkerNode(runtime, concurrency=2).run(stop))
            try:
                for _ in range(400):
                    if runtime.store.load(call.id).state.is_terminal:
                        break
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await node
        done = runtime.store.load(call.id)
    finally:
        runtime.close()
    assert done.result == {
        "subject": f"{names}.sum.9",
        "got": {"note": "hi", "deps": {"sum": {"result": {"sum": 9}, "task_id": str(first.id)}}},
    }
