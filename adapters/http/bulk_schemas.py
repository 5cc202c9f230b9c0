"""The JSON Schemas of the bulk action routes: the request body (its shape only: the values
of the action, the filter, the priority and the target queue are checked by
``adapters/bulk_actions.plan_bulk`` and ``adapters/task_filters.py``, so a bad one is a 400
naming what is wrong), the dry run's answer and a bulk action's progress."""

from __future__ import annotations

from execution_ledger.adapters.request_schemas import NULLABLE_STRING, TIME, UUID, Schema
from execution_ledger.domain.bulk import MAX_REASON_CHARS, BulkKind, BulkState

FILTER_FIELDS = ("state", "type", "queue", "lane", "tag", "since", "until", "text")
MAX_SAMPLE = 10

_FILTER: Schema = {
    "type": "object",
    "description": "which tasks: the filters of GET /v1/tasks (at least one); times are ISO "
    "8601 with a zone, tasks enqueued in [since, until)",
    "additionalProperties": {"type": "string", "maxLength": 1000},
    "examples": [{"state": "failed", "type": "echo"}],
}
BULK_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["action", "filter"],
    "examples": [
        {"action": "retry", "filter": {"state": "failed", "type": "echo"}, "dry_run": True},
        {"action": "reprioritise", "filter": {"state": "ready"}, "priority": 5},
    ],
    "properties": {
        "action": {
            "type": "string",
            "description": "one of: " + ", ".join(k.value for k in BulkKind),
        },
        "filter": _FILTER,
        "priority": {"type": "integer", "description": "reprioritise: -1000..1000"},
        "queue": {"type": "string", "description": "move: a declared queue"},
        "reason": {
            "type": "string",
            "maxLength": MAX_REASON_CHARS,
            "description": "cancel: recorded with each cancel",
        },
        "dry_run": {
            "type": "boolean",
            "description": "count and sample the matches; change nothing",
        },
    },
}
_COUNT: Schema = {"type": "integer", "minimum": 0}
_FILTER_ANSWER: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
BULK_DRY_RUN: Schema = {
    "type": "object",
    "required": ["dry_run", "action", "filter", "matched", "sample"],
    "properties": {
        "dry_run": {"const": True},
        "action": {"type": "string"},
        "filter": _FILTER_ANSWER,
        "matched": _COUNT,
        "sample": {"type": "array", "items": UUID, "maxItems": MAX_SAMPLE},
    },
}
BULK_ACTION: Schema = {
    "type": "object",
    "required": [
        "id",
        "action",
        "filter",
        "principal",
        "role",
        "state",
        "matched",
        "changed",
        "skipped",
        "requested_at",
    ],
    "properties": {
        "id": UUID,
        "action": {"type": "string"},
        "filter": _FILTER_ANSWER,
        "priority": {"type": ["integer", "null"]},
        "queue": NULLABLE_STRING,
        "reason": {"type": "string"},
        "principal": {"type": "string"},
        "role": {"type": "string"},
        "state": {"type": "string", "enum": [s.value for s in BulkState]},
        "matched": {**_COUNT, "description": "tasks that matched when it was asked"},
        "changed": {**_COUNT, "description": "tasks changed so far"},
        "skipped": {
            **_COUNT,
            "description": "tasks that had moved on (ended, started, already so) when reached",
        },
        "stop_reason": NULLABLE_STRING,
        "requested_at": TIME,
        "updated_at": TIME,
    },
}
