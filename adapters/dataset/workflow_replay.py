"""The workflow steps replayed from the log (``projections/workflow_steps.py``), as JSONL:
``GET /v1/dataset?kind=workflow`` and ``workflow_step_lines``. One line per workflow event
up to the bound (a log position; the head of the log by default), keys in
``STEP_COLUMNS`` order; the same log and bound give the same bytes."""

from __future__ import annotations

import json
from collections.abc import Iterator

from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.projections.workflow_steps import workflow_step

PAGE = 5000


def workflow_step_lines(store: EventStore, until: int | None = None) -> Iterator[bytes]:
    """JSONL lines of the workflow steps with positions up to ``until`` (the head now if
    None), read page by page."""
    end = store.head_position() if until is None else until
    after = 0
    while after < end:
        page = store.read(after, PAGE, until=end)
        if not page:
            return
        for recorded in page:
            row = workflow_step(recorded.event, recorded.position)
            if row is not None:
                text = json.dumps(row, separators=(",", ":"), ensure_ascii=False)
                yield (text + "\n").encode()
        after = page[-1].position
