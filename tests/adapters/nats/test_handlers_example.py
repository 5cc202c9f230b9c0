"""examples/handlers.toml (docs/patterns.md, pattern 2) works as written."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from execution_ledger.adapters.nats.bridge import NatsBridge
from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.postgres.task_queries import TaskFilter, list_tasks
from execution_ledger.adapters.runtime import open_runtime
from tests.adapters.nats.conftest import connected, delete_stream

pytestmark = pytest.mark.asyncio
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "handlers.toml"


async def test_the_handlers_example_answers_a_request_and_records_a_publication(
    ledger_env: None, nats_url: str, names: str, tmp_path: Path
) -> None:
    # The machine's NATS is shared: this test's own stream and subjects.
    text = EXAMPLE.read_text().replace("LEDGER_EVENTS", f"{names.upper()}_EVENTS")
    text = text.replace('"ledger.events"', f'"{names}.events"')
    text = text.replace("intelligence.hub", f"{names}.hub").replace(
        '"patterns.validate"', f'"{names}.validate"'
    )
    text = text.replace('"execution.request.task"', f'"{names}.request"')
    config = tmp_path / "handlers.toml"
    config.write_text(text)
    runtime = open_runtime(config, pool_size=2)
    stop = asyncio.Event()
    bridge = NatsBridge(runtime, nats_url)
    jobs = [
        asyncio.create_task(bridge.run(stop)),
        asyncio.create_task(WorkerNode(runtime).run(stop)),
    ]
    try:
        await asyncio.wait_for(bridge.connected.wait(), 10)
        async with connected(nats_url) as client:
            reply = await client.request(
                f"{names}.hub.agents.query", json.dumps({"question": "ready?"}).encode(), timeout=10
            )
            await client.publish(f"{names}.validate", json.dumps({"pattern": "p-1"}).encode())
            await client.flush()
        answer = json.loads(reply.data)
        for _ in range(100):
            await asyncio.to_thread(runtime.catch_up)
            published = list_tasks(runtime.store, TaskFilter(type_name="pattern.validate")).rows
            if published and published[0]["state"] == "succeeded":
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*jobs)
        await delete_stream(nats_url, f"{names.upper()}_EVENTS")
        runtime.close()
    assert (answer["state"], answer["result"]) == ("succeeded", {"answer": "READY?"})
    assert published[0]["result"]["stdout"] == "validated p-1\n"
