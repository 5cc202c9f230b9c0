"""The composition root: settings -> database -> schema -> event store -> ledger + projections.

Everything real is wired here once; the CLI, the HTTP server and the worker nodes all start
from ``open_runtime``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from execution_ledger.adapters.ledger import Ledger, utc_now
from execution_ledger.adapters.ledger_reads import LedgerReads
from execution_ledger.adapters.postgres.embedded import start_embedded_postgres
from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.postgres.log_follower import (
    FOLLOWER_FAILURES as FOLLOWER_FAILURES,  # re-exported with the follower it hands out
)
from execution_ledger.adapters.postgres.log_follower import Appends as Appends
from execution_ledger.adapters.postgres.log_follower import LogFollower
from execution_ledger.adapters.postgres.log_watcher import LogWatcher
from execution_ledger.adapters.postgres.projection_runner import (
    ProjectionBusy as ProjectionBusy,  # re-exported: a refusal the CLI shows in one line
)
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

if TYPE_CHECKING:
    from execution_ledger.adapters.dataset.replay import LogBound, Replay, RowFilter
    from execution_ledger.adapters.postgres.audit import VerifyReport
    from execution_ledger.adapters.postgres.learn_feed import PostgresDatasetFeed


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

    def dataset_replay(self, until: LogBound | None, row_filter: RowFilter) -> Replay:
        """The learning dataset replayed from the log (the archive first) up to ``until``:
        ``ledger replay`` and ``GET /v1/dataset`` (blocking: it reads where the log ends)."""
        from execution_ledger.adapters.dataset.replay import Replay
        from execution_ledger.adapters.retention.segments import configured_archive

        archive = configured_archive(self.settings.config.retention, self.settings.schema)
        return Replay(self.store, until, row_filter, archive=archive)

    def workflow_steps(self, until: int | None) -> Iterator[bytes]:
        """The workflow steps of the log up to a position (the head if None), as JSONL."""
        from execution_ledger.adapters.dataset.workflow_replay import workflow_step_lines

        return workflow_step_lines(self.store, until)

    def verify_audit_chain(self, read_url: Callable[[], str] | None = None) -> VerifyReport:
        """The audit chain recomputed against the log (the archive first), read where
        ``read_url`` says (the primary's pool if None): ``ledger audit verify`` and
        ``GET /v1/audit/verify``."""
        from execution_ledger.adapters.postgres.audit import verify_chain
        from execution_ledger.adapters.retention.segments import configured_archive

        archive = configured_archive(self.settings.config.retention, self.settings.schema)
        return verify_chain(self.store, self.runners["audit_chain"], read_url, archive)

    def learn_feed(self, task_type: str) -> PostgresDatasetFeed:
        """The delivery position of one type's learn hook (``ledger learn``)."""
        from execution_ledger.adapters.postgres.learn_feed import PostgresDatasetFeed

        return PostgresDatasetFeed(self.store, task_type)

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
