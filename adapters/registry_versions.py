"""Registry versions: record a configuration's registry as the next version, refuse one
that would break work in flight, and read the versions back.

``apply`` is the one way a registry is recorded (``ledger registry apply``, a node's start,
``POST /v1/registry/versions``): load the ``RegistryHistory``, compare digests (the same
registry records nothing), read the live work, let ``domain/registry_change.py`` decide,
save ``RegistryChanged`` (retried on a concurrent change). ``registry_of`` turns a recorded
document back into a ``Registry`` for this process: its adapter defaults check the task
types' settings, and its own principals (a document holds no token hashes) stay in force.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from execution_ledger.adapters.config_file import LoadedConfig, settings_check
from execution_ledger.adapters.postgres.concurrent_write import retry_on_conflict
from execution_ledger.adapters.postgres.event_store import EventStore, RecordedEvent
from execution_ledger.adapters.postgres.registry_tables import RegistryTables
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.registry import Principal, Registry, build_registry
from execution_ledger.domain.registry_change import (
    LiveWork,
    RegistryChangeRefused,
    breaking_changes,
    types_to_check,
)
from execution_ledger.domain.registry_diff import diff_documents, diff_summary
from execution_ledger.domain.registry_document import document_digest
from execution_ledger.domain.registry_history import (
    RegistryHistory,
    RegistryVersionNotFound,
    registry_history_id,
)


@dataclass(frozen=True)
class RegistryVersion:
    """One recorded version, as ``RegistryChanged`` holds it, with when and where."""

    version: int
    digest: str
    document: dict[str, Any]
    diff: list[dict[str, Any]]
    by: str
    source: str
    forced: bool
    at: datetime
    position: int
    evidence: dict[str, Any] | None = None  # the simulation that justified it, if any


@dataclass(frozen=True)
class ApplyOutcome:
    """What ``apply`` did: the version current afterwards, whether it recorded one, the
    diff from the version before, and the refusals (found, and overridden or not)."""

    version: int
    recorded: bool
    diff: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    forced: bool = False
    dry_run: bool = False
    evidence: dict[str, Any] | None = None


class RegistryVersions:
    def __init__(
        self,
        store: EventStore,
        adapter_defaults: Mapping[str, dict[str, Any]] | None = None,
        principals: tuple[Principal, ...] = (),
    ) -> None:
        self.store = store
        self.tables = RegistryTables(store)
        self.adapter_defaults = dict(adapter_defaults or {})
        self.principals = principals  # this process's own (the documents hold no hashes)

    # -- reading ------------------------------------------------------------------------

    def history(self) -> list[RegistryVersion]:
        """Every recorded version, oldest first."""
        recorded = self.store.history(registry_history_id())
        return [_version(r) for r in recorded if _is_change(r)]

    def version(self, number: int) -> RegistryVersion:
        recorded = self.tables.change(number)
        if recorded is None:
            latest = self.tables.latest_version()
            known = f"1 to {latest}" if latest else "none recorded yet"
            raise RegistryVersionNotFound(f"no registry version {number} (versions: {known})")
        return _version(recorded)

    def latest(self) -> RegistryVersion | None:
        """The latest version, read alone."""
        recorded = self.tables.change()
        return _version(recorded) if recorded is not None else None

    def latest_number(self) -> int:
        return self.tables.latest_version()

    def registry_of(self, version: RegistryVersion) -> Registry:
        """The recorded document as this process's ``Registry`` (``ConfigError`` if this
        process cannot run it, e.g. an adapter setting its executors refuse)."""
        data = {**version.document, "principals": []}
        registry = build_registry(data, adapter_check=settings_check(self.adapter_defaults))
        return dataclasses.replace(registry, principals=self.principals, version=version.version)

    # -- recording ----------------------------------------------------------------------

    def apply(
        self,
        config: LoadedConfig,
        by: str,
        *,
        force: bool = False,
        dry_run: bool = False,
        first_unchecked: bool = False,
        evidence: dict[str, Any] | None = None,
    ) -> ApplyOutcome:
        """Record ``config``'s registry as the next version, unless it is the current one.

        A change that would break live work raises ``RegistryChangeRefused`` unless
        ``force`` (then it is recorded with ``forced``); ``dry_run`` records nothing and
        says what would happen; ``first_unchecked`` skips the refusals when nothing is
        recorded yet (a deployment's first start); ``evidence`` (a simulation report's,
        ``domain/registry_evidence.py``) is recorded in the event."""
        digest = document_digest(config.document)

        def decide_and_record() -> ApplyOutcome:
            history = self._load()
            if history.digest == digest:
                return ApplyOutcome(history.current, recorded=False, dry_run=dry_run)
            diff = diff_documents(history.document, dict(config.document))
            unchecked = first_unchecked and history.current == 0
            reasons = [] if unchecked else self._refusals(history, config.registry)
            if dry_run:
                return ApplyOutcome(
                    history.current,
                    False,
                    diff,
                    reasons,
                    forced=force,
                    dry_run=True,
                    evidence=evidence,
                )
            if reasons and not force:
                raise RegistryChangeRefused(reasons)
            forced = bool(reasons)
            version = history.change(
                dict(config.document), digest, by, config.source, forced, evidence
            )
            self.store.save(history)  # another change recorded meanwhile: decide again
            return ApplyOutcome(version, True, diff, reasons, forced=forced, evidence=evidence)

        return retry_on_conflict(decide_and_record, what="the registry")

    def _load(self) -> RegistryHistory:
        history: Any = None
        for recorded in self.store.history(registry_history_id()):
            history = recorded.event.mutate(history)
        return history if isinstance(history, RegistryHistory) else RegistryHistory.start()

    def _refusals(self, history: RegistryHistory, new: Registry) -> list[str]:
        old = self._current_registry(history)
        by_type, by_queue = self.tables.live_counts()
        args = {name: self.tables.live_args(name) for name in types_to_check(old, new, by_type)}
        return breaking_changes(old, new, LiveWork(by_type, by_queue, args))

    def _current_registry(self, history: RegistryHistory) -> Registry | None:
        """The registry now recorded (None: none yet, or one this process cannot build:
        then every schema is checked)."""
        if not history.current:
            return None
        try:
            return build_registry({**history.document, "principals": []})
        except ConfigError:
            return None


def _is_change(recorded: RecordedEvent) -> bool:
    return type(recorded.event).__qualname__ == "RegistryHistory.RegistryChanged"


def _version(recorded: RecordedEvent) -> RegistryVersion:
    event: Any = recorded.event
    return RegistryVersion(
        version=event.version,
        digest=event.digest,
        document=event.document,
        diff=event.diff,
        by=event.by,
        source=event.source,
        forced=event.forced,
        at=event.timestamp,
        position=recorded.position,
        evidence=getattr(event, "evidence", None),
    )


def version_json(version: RegistryVersion, whole: bool = False) -> dict[str, Any]:
    """A version as the HTTP API and ``ledger registry`` show it: a summary of its diff, or
    (``whole``) its document and diff."""
    shown: dict[str, Any] = {
        "version": version.version,
        "digest": version.digest,
        "at": version.at,
        "by": version.by,
        "source": version.source,
        "forced": version.forced,
        "position": version.position,
        "summary": diff_summary(version.diff),
        "evidence": version.evidence,
    }
    if whole:
        shown["document"] = version.document
        shown["diff"] = version.diff
    return shown


def outcome_json(outcome: ApplyOutcome) -> dict[str, Any]:
    return {
        "version": outcome.version,
        "recorded": outcome.recorded,
        "dry_run": outcome.dry_run,
        "forced": outcome.forced,
        "reasons": outcome.reasons,
        "summary": diff_summary(outcome.diff),
        "diff": outcome.diff,
        "evidence": outcome.evidence,
    }
