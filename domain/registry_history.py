"""The RegistryHistory aggregate: every registry a deployment runs on, as numbered versions.

One aggregate for the whole schema, with a deterministic id, so every node and the CLI find
it. Its first save holds ``RegistryHistoryStarted`` and the first ``RegistryChanged``
(version 1); each later ``RegistryChanged`` is the next version. A change carries the whole
new document (``domain/registry_document.py``), its digest, the diff from the version
before (``domain/registry_diff.py``), who made it, from which file, whether it was
forced past the refusals of ``domain/registry_change.py``, and (when proposed with a
simulation report) the evidence that justified it (``domain/registry_evidence.py``).
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from execution_ledger.domain.errors import InvalidTransition, LedgerError
from execution_ledger.domain.registry_diff import diff_documents
from execution_ledger.domain.stored_topics import pin_topics


class RegistryVersionNotFound(LedgerError):
    code = "registry_version_not_found"


def registry_history_id() -> UUID:
    return uuid5(NAMESPACE_URL, "execution-ledger:registry")


class RegistryHistory(Aggregate):
    class RegistryHistoryStarted(Aggregate.Created):
        pass

    @event(RegistryHistoryStarted)
    def __init__(self, id: UUID) -> None:
        self.current = 0  # the latest registry version (0: none recorded yet)
        self.digest: str | None = None
        self.document: dict[str, Any] = {}

    @classmethod
    def start(cls) -> RegistryHistory:
        return cls(id=registry_history_id())

    class RegistryChanged(Aggregate.Event):
        version: int
        digest: str
        document: dict[str, Any]
        diff: list[dict[str, Any]]
        by: str
        source: str
        forced: bool
        evidence: dict[str, Any] | None = None  # at the end: stored events still load

    def change(
        self,
        document: dict[str, Any],
        digest: str,
        by: str,
        source: str,
        forced: bool = False,
        evidence: dict[str, Any] | None = None,
    ) -> int:
        """Record ``document`` as the next version; returns its number. The same registry
        as the current one is refused (nothing would change)."""
        if digest == self.digest:
            raise InvalidTransition(f"the registry is already version {self.current} ({digest})")
        version = self.current + 1
        diff = diff_documents(self.document, document)
        self._changed(
            version=version,
            digest=digest,
            document=document,
            diff=diff,
            by=by,
            source=source,
            forced=forced,
            evidence=evidence,
        )
        return version

    @event(RegistryChanged)
    def _changed(
        self,
        version: int,
        digest: str,
        document: dict[str, Any],
        diff: list[dict[str, Any]],
        by: str,
        source: str,
        forced: bool,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        self.current = version
        self.digest = digest
        self.document = document


pin_topics(RegistryHistory)  # the log's names for these classes (see stored_topics)
