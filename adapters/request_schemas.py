"""JSON Schemas (2020-12, as OpenAPI 3.1 uses them) of request bodies, and shared pieces.

Request bodies are validated against these very schemas before anything else reads them,
so the OpenAPI document (``openapi.py``) describes what the server really accepts.
"""

from __future__ import annotations

from typing import Any

from execution_ledger.domain.submission import MAX_GRAPH_TASKS
from execution_ledger.domain.task import TaskState

MAX_TIMEOUT_SECONDS = 366 * 86400.0
MAX_WAIT_SECONDS = 60.0  # ?wait= of an enqueue; a server may cap it lower
MAX_ATTEMPTS = 1000
MAX_TAGS = 50
MAX_DEPENDENCIES = 10_000
TIMEOUT_KINDS = (
    "schedule_to_start",
    "start_to_close",
    "heartbeat",
    "schedule_to_close",
    "signal_wait",
)

Schema = dict[str, Any]

NAME: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,100}$"}
UUID: Schema = {"type": "string", "format": "uuid"}
NULLABLE_UUID: Schema = {"type": ["string", "null"], "format": "uuid"}
TIME: Schema = {"type": "string", "format": "date-time"}
NULLABLE_TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
STATE: Schema = {"type": "string", "enum": [s.value for s in TaskState]}
DURATION: Schema = {
    "description": "seconds, or a duration such as '500ms', '30s', '5m', '1h30m' (at most a year)",
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_SECONDS},
        {"type": "string", "minLength": 1, "maxLength": 50},
    ],
}
SHORT_TEXT: Schema = {"type": "string", "minLength": 1, "maxLength": 200}
TAGS: Schema = {
    "type": "array",
    "maxItems": MAX_TAGS,
    "items": {"type": "string", "minLength": 1, "maxLength": 100},
}

SINGLETON: Schema = {
    **SHORT_TEXT,
    "description": "a key, or a template over the args ('report:{customer}'): while a queued "
    "or running task of the type holds it, the enqueue is answered with that task (200, "
    "coalesced 'singleton') and stores nothing; default: the type's singleton template",
}
DEBOUNCE: Schema = {
    "type": "object",
    "required": ["key", "window"],
    "additionalProperties": False,
    "description": "coalesce submissions of the type with this key into one task that starts "
    "once the window has passed since the last of them (200, coalesced 'debounce', for each "
    "after the first); not with an idempotency key, run_at or a singleton key",
    "properties": {
        "key": {**SHORT_TEXT, "description": "a key, or a template over the args"},
        "window": {
            **DURATION,
            "description": "the quiet time before it starts; " + DURATION["description"],
        },
        "mode": {
            "type": "string",
            "enum": ["last", "first"],
            "description": "whose args it runs with: the last submission's (default) or the "
            "first's",
        },
        "max_wait": {
            **DURATION,
            "description": "the start never moves past the first submission plus this (no "
            "shorter than the window; default: no bound); " + DURATION["description"],
        },
    },
}

TASK_SUBMISSION: Schema = {
    "type": "object",
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": {**NAME, "description": "a task type of the registry (or an ad-hoc name)"},
        "args": {"type": "object", "description": "checked against the type's schema"},
        "depends_on": {"type": "array", "maxItems": MAX_DEPENDENCIES, "items": UUID},
        "run_at": {**TIME, "description": "not before this time (with a time zone)"},
        "queue": NAME,
        "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
        "lane": SHORT_TEXT,
        "idempotency_key": {
            **SHORT_TEXT,
            "description": "a repeated enqueue with a key a task holds returns that task (200)",
        },
        "idempotency_period": {
            **DURATION,
            "description": "how long the key holds (default: for ever); " + DURATION["description"],
        },
        "tags": TAGS,
        "timeouts": {
            "type": "object",
            "additionalProperties": False,
            "properties": {kind: DURATION for kind in TIMEOUT_KINDS},
        },
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS},
        "singleton": SINGLETON,
        "debounce": DEBOUNCE,
        "adapter": {**NAME, "description": "ad-hoc task: the adapter to run it (admin only)"},
        "adapter_settings": {"type": "object", "description": "ad-hoc task: adapter settings"},
        "inputs": {
            "description": "dependencies whose results the task takes: true (all, by ref or "
            "id), false, or an object input name -> ref or id (default: the type's inputs)",
            "anyOf": [
                {"type": "boolean"},
                {"type": "object", "additionalProperties": {"type": "string"}},
            ],
        },
    },
}

GRAPH_TASK: Schema = {
    "type": "object",
    "required": ["ref", "type"],
    "additionalProperties": False,
    "properties": {
        "ref": {**SHORT_TEXT, "pattern": "^[^#]", "description": "the task's name in this graph"},
        "type": NAME,
        "args": {"type": "object"},
        "depends_on": {
            "type": "array",
            "maxItems": MAX_DEPENDENCIES,
            "items": {"type": "string", "minLength": 1, "maxLength": 200},
            "description": "refs of this graph or ids of stored tasks",
        },
        "queue": NAME,
        "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
        "lane": SHORT_TEXT,
        "tags": TAGS,
        "inputs": {
            "description": "dependencies whose results the task takes: true (all, by ref), "
            "false, or an object input name -> ref (default: the type's inputs)",
            "anyOf": [
                {"type": "boolean"},
                {"type": "object", "additionalProperties": {"type": "string"}},
            ],
        },
    },
}

GRAPH_SUBMISSION: Schema = {
    "type": "object",
    "required": ["tasks"],
    "additionalProperties": False,
    "properties": {
        "tasks": {"type": "array", "minItems": 1, "maxItems": MAX_GRAPH_TASKS, "items": GRAPH_TASK}
    },
}

SIGNAL_REQUEST: Schema = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {**NAME, "description": "the signal the task waits for (e.g. approval)"},
        "data": {"description": "any JSON the task's code will see (at most 64 KiB)"},
    },
}

CANCEL_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"reason": {"type": "string", "maxLength": 1000}},
}
