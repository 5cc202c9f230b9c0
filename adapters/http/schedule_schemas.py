"""JSON schemas of the run-time schedule routes: the bodies the handlers check
(``routes_schedules.py``) and the answers the OpenAPI document describes.

A body that does not match is refused with 422; one that matches but that
``build_schedule`` refuses (a bad cron expression, time zone, task type or args) with 400.
"""

from __future__ import annotations

from execution_ledger.adapters.request_schemas import NAME, NULLABLE_TIME, TIME, UUID, Schema
from execution_ledger.domain.schedule_definitions import MAX_BACKFILL_TICKS
from execution_ledger.domain.schedules import MAX_TICKS_PER_ROUND, CatchUp, Overlap

_DEFINITION_PROPERTIES: dict[str, Schema] = {
    "cron": {
        "type": "string",
        "maxLength": 200,
        "description": "five fields (minute hour day month weekday), or six with seconds last",
    },
    "timezone": {"type": "string", "maxLength": 100, "description": "IANA zone (default UTC)"},
    "task_type": {**NAME, "description": "a task type of the registry"},
    "args": {"type": "object", "description": "the task's args (checked against its schema)"},
    "catch_up": {"type": "string", "enum": [c.value for c in CatchUp]},
    "max_catch_up": {"type": "integer", "minimum": 1, "maximum": MAX_TICKS_PER_ROUND},
    "overlap": {
        "type": "string",
        "enum": [o.value for o in Overlap],
        "description": "a tick while the last run is queued or running: allow (default), "
        "skip it, or queue_one (at most one waiting run)",
    },
}

SCHEDULE_DEFINITION: Schema = {
    "type": "object",
    "required": ["name", "cron", "task_type"],
    "additionalProperties": False,
    "properties": {
        "name": {**NAME, "description": "not the name of a schedule of the registry file"},
        **_DEFINITION_PROPERTIES,
        "paused": {"type": "boolean", "description": "define it paused (default false)"},
    },
}

SCHEDULE_UPDATE: Schema = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": _DEFINITION_PROPERTIES,
}

BACKFILL_REQUEST: Schema = {
    "type": "object",
    "required": ["since", "until"],
    "additionalProperties": False,
    "properties": {
        "since": {**TIME, "description": "first moment of the range (with a time zone)"},
        "until": {**TIME, "description": "last moment of the range, included"},
        "dry_run": {"type": "boolean", "description": "only count the ticks (default false)"},
    },
}

BACKFILL_RESULT: Schema = {
    "type": "object",
    "required": ["name", "since", "until", "ticks", "enqueued", "existing", "dry_run"],
    "properties": {
        "name": {"type": "string"},
        "since": TIME,
        "until": TIME,
        "ticks": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_BACKFILL_TICKS,
            "description": "ticks in the range",
        },
        "enqueued": {"type": "integer", "minimum": 0, "description": "tasks created now"},
        "existing": {
            "type": "integer",
            "minimum": 0,
            "description": "ticks whose task was enqueued before (not enqueued again)",
        },
        "dry_run": {"type": "boolean"},
        "task_ids": {"type": "array", "items": UUID},
    },
}

SCHEDULE_DELETED: Schema = {
    "type": "object",
    "required": ["name", "deleted"],
    "properties": {"name": {"type": "string"}, "deleted": {"type": "boolean"}},
}

# What every schedule answer holds beside response_schemas.SCHEDULE's keys.
SCHEDULE_EXTRA_PROPERTIES: dict[str, Schema] = {
    "source": {"type": "string", "enum": ["file", "runtime"]},
    "max_catch_up": {"type": "integer"},
    "overlap": {"type": "string", "enum": [o.value for o in Overlap]},
    "skipped_ticks": {
        "type": "integer",
        "minimum": 0,
        "description": "ticks skipped by the overlap policy",
    },
    "last_skipped_tick": NULLABLE_TIME,
    "changes": {
        "type": "object",
        "description": "(an update) each changed key: [old value, new value]",
    },
}
