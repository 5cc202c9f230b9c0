"""The composition root: settings -> database -> schema -> event store -> ledger + projections.

Everything real is wired here once; the CLI, the HTTP server and the worker nodes all start
from ``open_runtime``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from execution_ledger.adapters.ledger import Ledger, utc_now
from execution_ledger.adapters.ledger_reads import LedgerReads
from execution_ledger.adapters.postgres.embedded import start_embedded_postgres
from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.log_follower import LogFollower
from execution_ledger.adapters.postgres.log_watcher import LogWatcher
from execution_ledger.adapters.postgres.projection_runner import ProjectionRunner
from execution_ledger.adapters.postgres.read_replica import ReadReplica
from execution_ledger.adapters.postgres.schema import create_schema
from execution_ledger.adapters.settings import Settings, load_settings
from execution_ledger.domain.registry import Registry
from execution_ledger.processors.dependency_cascade import DependencyCascade
from execution_ledger.projections.audit_chain import AuditChain
from execution_ledger.projections.base import Projection
from execution_ledger.projections.dataset import DatasetProjection
from execution_ledger.projections.readiness import ReadinessGraph
from execution_ledger.projections.task_view import TaskView


def all_projections(schema: str) -> list[Projection]:
    return [TaskView(schema), ReadinessGraph(schema), AuditChain(schema), DatasetProjection(schema)]


@dataclass
class Runtime:
    settings: Settings
    database_url: str
    store: EventStore
    ledger: Ledger
    runners: dict[str, ProjectionRunner]
    reads: LedgerReads  # what the ways in read (the ledger's query side)

    @property
    def registry(self) -> Registry:
        """The registry this process runs now (the registry follower swaps it)."""
        return self.settings.config.registry

    def log_watcher(self) -> LogWatcher:
        """A new LISTEN on the log's appends, for a server whose calls wait (run it)."""
        return LogWatcher(self.database_url, self.store.recorder.channel_name)

    def log_follower(self, name: str) -> LogFollower:
        """A follower of the log outside the projections (the NATS egress), by name."""
        return LogFollower(self.store, name)

    def catch_up(self) -> None:
        """Bring every projection up to the head of the log (readiness last: it appends)."""
        for runner in self.runners.values():
            runner.catch_up()
        # The cascade may have appended events the other projections have not seen yet.
        for runner in self.runners.values():
            runner.catch_up()

    def close(self) -> None:
        if self.store.replica is not None:
            self.store.replica.close()
        self.store.close()


def resolve_database_url(settings: Settings) -> str:
    return settings.database_url or start_embedded_postgres()


def open_runtime(config_path: str | Path | None = None, *, pool_size: int = 5) -> Runtime:
    settings = load_settings(config_path)
    database_url = resolve_database_url(settings)
    projections = all_projections(settings.schema)
    create_schema(database_url, settings.schema, projections)
    store = EventStore(database_url, settings.schema, pool_size=pool_size)
    if settings.read_database_url:
        store.replica = ReadReplica(settings.read_database_url, settings.read_max_lag)
    cascade = DependencyCascade(store, clock=utc_now)
    runners = {p.name: ProjectionRunner(store, p) for p in projections if p.name != "readiness"}
    runners["readiness"] = ProjectionRunner(store, ReadinessGraph(settings.schema), reactor=cascade)
    ledger = Ledger(
        store, settings.config.registry, adapter_defaults=settings.config.adapter_defaults
    )
    ledger.pause_configured()
    runtime = Runtime(settings, database_url, store, ledger, runners, LedgerReads(store))
    from execution_ledger.adapters.registry_follower import (
        mark_recorded_version,  # it imports this module
    )

    mark_recorded_version(runtime)  # the file's version number, if it is the latest recorded
    return runtime
