"""Keeping a process on the latest registry version, without a restart.

At a worker node's start, ``RegistryFollower.start`` records the node's file when the log
has no registry yet (version 1) or when the file is new (a change like any other, refused
if it would break live work); a file that was recorded before but is no longer the latest
(a node restarted with an old file) records nothing, and the node runs the latest version.
Then ``poll`` (every few seconds) reads the latest version number, one index lookup, and
when it moved builds that version's ``Registry`` for this process; the node swaps it in
between two worker rounds and reports it in ``worker_nodes.registry_version``.

``use_registry`` is the swap of the runtime's part: the ``Ledger`` (enqueue, signals,
pauses) and the settings the HTTP API reads its registry from.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING

from execution_ledger.adapters.registry_versions import RegistryVersion, RegistryVersions
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.registry_document import document_digest

if TYPE_CHECKING:
    from execution_ledger.adapters.node import WorkerNode

log = logging.getLogger(__name__)


def registry_versions(runtime: Runtime) -> RegistryVersions:
    config = runtime.settings.config
    return RegistryVersions(runtime.store, config.adapter_defaults, config.registry.principals)


def use_registry(runtime: Runtime, registry: Registry, version: RegistryVersion | None) -> None:
    """Make ``registry`` the one this runtime's ledger and HTTP API use."""
    config = runtime.settings.config
    document = version.document if version is not None else config.document
    config = dataclasses.replace(config, registry=registry, document=document)
    runtime.settings = dataclasses.replace(runtime.settings, config=config)
    runtime.ledger.registry = registry


def mark_recorded_version(runtime: Runtime) -> None:
    """Give the runtime's registry its version number when its file is the latest recorded
    version (so tasks enqueued by this process say so); otherwise it stays unnumbered."""
    versions = registry_versions(runtime)
    latest = versions.latest()
    config = runtime.settings.config
    if latest is not None and latest.digest == document_digest(config.document):
        registry = dataclasses.replace(config.registry, version=latest.version)
        use_registry(runtime, registry, latest)


class RegistryFollower:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.versions = registry_versions(runtime)
        self.file = runtime.settings.config  # the node's own file, as it started
        self.running: int | None = runtime.settings.config.registry.version
        self.refused: int | None = None  # a version this process could not build

    def start(self, by: str) -> Registry:
        """Record the node's file if it is new; the registry to run (numbered)."""
        digest = document_digest(self.file.document)
        history = self.versions.history()
        if history and history[-1].digest == digest:
            return self._running(history[-1], self.file.registry)
        own = [version for version in history if version.digest == digest]
        if own:
            return self._stale_file(own[-1], history[-1])
        outcome = self.versions.apply(self.file, by, first_unchecked=True)
        log.info("registry version %d recorded from %s", outcome.version, self.file.source)
        recorded = self.versions.version(outcome.version)
        return self._running(recorded, self.file.registry)

    def _stale_file(self, own: RegistryVersion, latest: RegistryVersion) -> Registry:
        """The node's file is an older version: run the latest (or, if this node cannot
        build it, its own)."""
        try:
            registry = self.versions.registry_of(latest)
        except ConfigError as error:
            self.refused = latest.version
            log.error(
                "registry version %d cannot run on this node (%s); running version %d, its file's",
                latest.version,
                error,
                own.version,
            )
            return self._running(own, self.file.registry)
        log.warning(
            "this node's registry file is version %d, not the latest (%d): running %d; "
            "`ledger registry apply FILE` records it again",
            own.version,
            latest.version,
            latest.version,
        )
        return self._running(latest, registry)

    def _running(self, version: RegistryVersion, registry: Registry) -> Registry:
        numbered = dataclasses.replace(registry, version=version.version)
        use_registry(self.runtime, numbered, version)
        self.running = version.version
        return numbered

    def poll(self) -> tuple[Registry, RegistryVersion] | None:
        """The latest version's registry when it is not the one running (None: no change,
        or a version this process cannot run, logged once: it keeps the one it runs)."""
        latest = self.versions.latest_number()
        if latest == 0 or latest == self.running or latest == self.refused:
            return None
        version = self.versions.version(latest)
        try:
            registry = self.versions.registry_of(version)
        except ConfigError as error:
            self.refused = latest
            log.error(
                "registry version %d cannot run on this node (%s); still running version %s",
                latest,
                error,
                self.running,
            )
            return None
        return registry, version

    def switch(self, registry: Registry, version: RegistryVersion) -> None:
        """Swap the runtime's part (the node swaps its own between worker rounds)."""
        use_registry(self.runtime, registry, version)
        self.running = version.version


class NodeRegistry:
    """A worker node's side: start on the right version, poll every ``interval`` seconds,
    swap a new version into the node's parts between two worker rounds, report it."""

    def __init__(self, node: WorkerNode, serves_all_queues: bool, interval: float = 2.0) -> None:
        self.node = node
        self.follower = RegistryFollower(node.runtime)
        self.serves_all_queues = serves_all_queues  # started without --queue: follow them
        self.interval = interval
        self.pending: tuple[Registry, RegistryVersion] | None = None
        self.reported: int | None = None
        self.tables = self.follower.versions.tables

    def start(self) -> None:
        """Record the node's file if new (``RegistryFollower.start``) and run that version."""
        registry = self.follower.start(by=f"node {self.node.worker_id}")
        self._swap_parts(registry)

    def report(self) -> None:
        running = self.follower.running
        self.tables.node_runs(self.node.worker_id, running, self.node.queues)
        self.reported = running

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if self.pending is None:
                    self.pending = await self.node._blocking(self.follower.poll)
                    if self.pending is not None:
                        self.node.worker.notify_ready()  # a round soon, to swap it in
                if self.reported != self.follower.running:
                    await self.node._blocking(self.report)
            except Exception:
                log.exception("reading the registry version failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    def between_rounds(self) -> None:
        """The worker's hook: swap a pending version in before the round starts."""
        if self.pending is None:
            return
        registry, version = self.pending
        self.pending = None
        self.follower.switch(registry, version)
        self._swap_parts(registry)
        log.info("now running registry version %d", version.version)

    def _swap_parts(self, registry: Registry) -> None:
        node = self.node
        node.dispatch.registry = registry
        node.dispatch.candidates.registry = registry
        node.worker.registry = registry
        node.scheduler.schedules = registry.schedules
        if self.serves_all_queues:
            node.queues = tuple(sorted(registry.queues))
            node.worker.settings = dataclasses.replace(node.worker.settings, queues=node.queues)
