"""The archived history as pages for a replay (``adapters/dataset/replay.py``): the segments
up to the archive head, read in log order, their task events decoded through the library and
handed on as ``EventFacts`` in the replay's text form, as the live log's pages are when read
through the library. A replay reads these, then the live log after the archive head.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from eventsourcing.persistence import StoredEvent

from execution_ledger.adapters.dataset.log_reader import FOLDED, TASK_TOPIC, LogPage
from execution_ledger.adapters.dataset.text_form import text_facts
from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.retention.archive_sql import read_head
from execution_ledger.adapters.retention.segments import ArchiveDir, ArchiveError, StoredRow
from execution_ledger.projections.event_facts import EventFacts, event_facts

_FOLDED_TOPICS = frozenset(TASK_TOPIC + name for name in FOLDED)


def archive_head_position(store: EventStore) -> int:
    """The last archived position of the store's log (0: nothing archived)."""
    with store.recorder.datastore.get_connection() as conn:
        head = read_head(conn, store.schema)
    return 0 if head is None else head.position


def require_archive(archive: ArchiveDir | None, through: int) -> None:
    """Refuse to replay an archived log without its archive."""
    if through > 0 and archive is None:
        raise ArchiveError(
            f"the log up to position {through} is archived and no [retention] archive_dir "
            "is configured to read it from"
        )


def archived_pages(
    store: EventStore,
    archive: ArchiveDir | None,
    through: int,
    until: int,
    every_task_event: bool = False,
) -> Iterator[LogPage]:
    """Pages of the archived task events with ``position <= min(through, until)``: those
    the fold reads, or every task event. ``through`` is the archive head."""
    if through <= 0:
        return
    require_archive(archive, through)
    assert archive is not None
    stop = min(through, until)
    for manifest in archive.manifests():
        if manifest.first_position > stop:
            return
        facts = [
            f
            for row in archive.rows(manifest)
            if row.position <= stop and (f := _facts(store, row, every_task_event)) is not None
        ]
        yield LogPage(None, facts, min(manifest.last_position, stop))


def _facts(
    store: EventStore, row: StoredRow, every_task_event: bool
) -> EventFacts[str, str] | None:
    topic = row.topic or ""
    if not topic.startswith(TASK_TOPIC):
        return None
    if not every_task_event and topic not in _FOLDED_TOPICS:
        return None
    stored = StoredEvent(
        originator_id=row.originator_id,
        originator_version=row.originator_version,
        topic=topic,
        state=row.state or b"",
    )
    facts: Any = event_facts(store.to_event(stored), row.position)
    return None if facts is None else text_facts(facts)
