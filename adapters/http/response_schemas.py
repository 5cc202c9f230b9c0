"""JSON Schemas of response bodies (the OpenAPI document's components)."""

from __future__ import annotations

from execution_ledger.adapters.http.schedule_schemas import SCHEDULE_EXTRA_PROPERTIES
from execution_ledger.adapters.request_schemas import (
    CANCEL_REQUEST,
    GRAPH_SUBMISSION,
    NULLABLE_STRING,
    NULLABLE_TIME,
    NULLABLE_UUID,
    SIGNAL_REQUEST,
    STATE,
    TASK_SUBMISSION,
    TIME,
    TIMEOUT_KINDS,
    UUID,
    Schema,
)

ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}

TIMEOUTS: Schema = {
    "type": "object",
    "properties": {kind: {"type": ["number", "null"]} for kind in TIMEOUT_KINDS},
}

TASK: Schema = {
    "type": "object",
    "required": [
        "id",
        "type",
        "adapter",
        "queue",
        "priority",
        "lane",
        "state",
        "principal",
        "role",
        "tags",
        "args",
        "result",
        "error",
        "attempts",
        "max_attempts",
        "worker",
        "timeout_kind",
        "depends_on",
        "graph_id",
        "ref",
        "idempotency_key",
        "timeouts",
        "run_at",
        "enqueued_at",
        "started_at",
        "finished_at",
        "lease_expires_at",
        "updated_at",
        "version",
        "position",
    ],
    "properties": {
        "id": UUID,
        "type": {"type": "string"},
        "adapter": {"type": "string"},
        "queue": {"type": "string"},
        "priority": {"type": "integer"},
        "lane": NULLABLE_STRING,
        "state": STATE,
        "principal": {"type": "string"},
        "role": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "args": {"type": "object"},
        "result": {"description": "the JSON result of a succeeded task, else null"},
        "error": {"type": ["object", "null"]},
        "attempts": {"type": "integer", "minimum": 0},
        "max_attempts": {"type": "integer", "minimum": 1},
        "worker": NULLABLE_STRING,
        "timeout_kind": NULLABLE_STRING,
        "depends_on": {"type": "array", "items": UUID},
        "graph_id": NULLABLE_UUID,
        "ref": NULLABLE_STRING,
        "idempotency_key": NULLABLE_STRING,
        "timeouts": TIMEOUTS,
        "run_at": NULLABLE_TIME,
        "enqueued_at": TIME,
        "started_at": NULLABLE_TIME,
        "finished_at": NULLABLE_TIME,
        "lease_expires_at": NULLABLE_TIME,
        "updated_at": TIME,
        "version": {"type": "integer", "minimum": 1},
        "position": {"type": "integer", "minimum": 1},
        "held_by": {
            "type": ["string", "null"],
            "description": "GET /v1/tasks/{id} and the list: why a ready or scheduled task is "
            "held back by a rate limit ('rate limit NAME (KEY): N per PERIOD, next slot at T'), "
            "as the last claim that read it saw; null otherwise",
        },
        "singleton_key": {
            **NULLABLE_STRING,
            "description": "GET /v1/tasks/{id} only: the singleton key it holds while live",
        },
        "debounce_key": {
            **NULLABLE_STRING,
            "description": "GET /v1/tasks/{id} only: the debounce key later submissions "
            "coalesce into it with, until it starts",
        },
        "coalesced": {
            "type": "string",
            "enum": ["idempotency_key", "singleton", "debounce"],
            "description": "POST /v1/tasks only, when the enqueue was coalesced into this "
            "task (nothing new was enqueued; 200, or with ?wait 200 or 202): the key that did it",
        },
        "progress": {
            "type": ["object", "null"],
            "description": "GET /v1/tasks/{id} only: the latest progress its code reported",
            "properties": {
                "fraction": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "message": NULLABLE_STRING,
            },
        },
        "registry_version": {
            "type": "object",
            "description": "GET /v1/tasks/{id} only: the registry versions it was enqueued "
            "under and its latest attempt ran under (null: not recorded, or not started)",
            "properties": {
                "enqueued": {"type": ["integer", "null"]},
                "run": {"type": ["integer", "null"]},
            },
        },
        "workflow": {
            "type": "object",
            "description": "GET /v1/tasks/{id} only: parent, children, signals, inputs",
            "properties": {
                "parent_id": NULLABLE_UUID,
                "depth": {"type": "integer", "minimum": 0},
                "children": {"type": "array", "items": UUID},
                "children_ended": {"type": "object", "additionalProperties": STATE},
                "on_child_failure": {"type": ["string", "null"], "enum": ["fail", "ignore", None]},
                "awaiting_signals": {"type": "array", "items": {"type": "string"}},
                "signals": {"type": "object", "description": "name -> data, as delivered"},
                "inputs": {"type": "object", "additionalProperties": UUID},
            },
        },
    },
}

TASK_PAGE: Schema = {
    "type": "object",
    "required": ["tasks", "next_cursor"],
    "properties": {
        "tasks": {"type": "array", "items": TASK},
        "next_cursor": {
            "type": ["string", "null"],
            "description": "pass as ?cursor= for the next page; null on the last page",
        },
    },
}

GRAPH_CREATED: Schema = {
    "type": "object",
    "required": ["graph_id", "tasks"],
    "properties": {
        "graph_id": NULLABLE_UUID,
        "tasks": {"type": "object", "additionalProperties": UUID, "description": "ref -> id"},
    },
}

EVENT: Schema = {
    "type": "object",
    "required": [
        "position",
        "type",
        "aggregate",
        "aggregate_id",
        "version",
        "time",
        "principal",
        "data",
    ],
    "properties": {
        "position": {"type": "integer", "minimum": 1},
        "type": {"type": "string"},
        "aggregate": {"type": "string"},
        "aggregate_id": UUID,
        "version": {"type": "integer", "minimum": 1},
        "time": TIME,
        "principal": {"type": "string"},
        "data": {"type": "object"},
    },
}

HISTORY: Schema = {
    "type": "object",
    "required": ["task_id", "events"],
    "properties": {"task_id": UUID, "events": {"type": "array", "items": EVENT}},
}

EVENT_PAGE: Schema = {
    "type": "object",
    "required": ["events", "next_after", "head"],
    "properties": {
        "events": {"type": "array", "items": EVENT},
        "next_after": {
            "type": "integer",
            "minimum": 0,
            "description": "pass as ?after= to continue; every position up to it was read",
        },
        "head": {"type": "integer", "minimum": 0, "description": "the last position of the log"},
    },
}

GRAPH_NODE: Schema = {
    "type": "object",
    "required": [
        "id",
        "type",
        "ref",
        "state",
        "queue",
        "lane",
        "priority",
        "depth",
        "pending",
        "graph_id",
    ],
    "properties": {
        "id": UUID,
        "type": NULLABLE_STRING,
        "ref": NULLABLE_STRING,
        "state": STATE,
        "queue": {"type": "string"},
        "lane": NULLABLE_STRING,
        "priority": {"type": "integer"},
        "depth": {"type": "integer", "minimum": 0},
        "pending": {"type": "integer", "description": "dependencies not yet succeeded"},
        "graph_id": NULLABLE_UUID,
    },
}

TASK_GRAPH: Schema = {
    "type": "object",
    "required": ["task_id", "nodes", "edges", "truncated"],
    "properties": {
        "task_id": UUID,
        "nodes": {"type": "array", "items": GRAPH_NODE},
        "edges": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["from", "to"],
                "properties": {
                    "from": {**UUID, "description": "the dependency"},
                    "to": {**UUID, "description": "the task that depends on it"},
                },
            },
        },
        "truncated": {"type": "boolean"},
        "parent_id": {**NULLABLE_UUID, "description": "the task that spawned this one"},
        "children": {"type": "array", "items": UUID, "description": "children it spawned"},
    },
}

READY_SET: Schema = {
    "type": "object",
    "required": ["queue", "tasks"],
    "properties": {
        "queue": {"type": "string"},
        "tasks": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "queue", "priority", "lane", "state", "depth", "run_at"],
                "properties": {
                    "id": UUID,
                    "queue": {"type": "string"},
                    "priority": {"type": "integer"},
                    "lane": NULLABLE_STRING,
                    "state": STATE,
                    "depth": {"type": "integer"},
                    "run_at": NULLABLE_TIME,
                },
            },
        },
    },
}

RETRY_POLICY: Schema = {
    "type": "object",
    "required": [
        "max_attempts",
        "backoff_initial",
        "backoff_multiplier",
        "backoff_max",
        "jitter",
        "non_retryable",
    ],
    "properties": {
        "max_attempts": {"type": "integer"},
        "backoff_initial": {"type": "number"},
        "backoff_multiplier": {"type": "number"},
        "backoff_max": {"type": "number"},
        "jitter": {"type": "number"},
        "non_retryable": {"type": "array", "items": {"type": "string"}},
    },
}

TASK_TYPE: Schema = {
    "type": "object",
    "required": [
        "name",
        "description",
        "adapter",
        "queue",
        "priority",
        "lane",
        "tags",
        "timeouts",
        "retry",
        "roles",
        "schema",
        "learn_hook",
        "may_enqueue",
    ],
    "properties": {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "adapter": {"type": "string"},
        "queue": {"type": "string"},
        "priority": {"type": "integer"},
        "lane": {**NULLABLE_STRING, "description": "lane template, e.g. agent:{agent_id}"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "timeouts": {**TIMEOUTS, "description": "resolved for the type (type, queue, default)"},
        "retry": RETRY_POLICY,
        "roles": {"type": "array", "items": {"type": "string"}},
        "schema": {"type": ["object", "null"], "description": "JSON Schema of the args"},
        "learn_hook": NULLABLE_STRING,
        "may_enqueue": {"type": "boolean", "description": "whether the caller may enqueue it"},
    },
}

TASK_TYPE_STATS: Schema = {
    "type": "object",
    "description": "Learned from the history: see docs/dataset.md",
    "required": [
        "tasks",
        "by_state",
        "attempts",
        "by_outcome",
        "success_rate",
        "timeout_rate",
        "run_seconds",
        "suggested_start_to_close",
    ],
    "properties": {
        "tasks": {"type": "integer", "minimum": 0},
        "by_state": {"type": "object", "additionalProperties": {"type": "integer"}},
        "attempts": {"type": "integer", "minimum": 0},
        "by_outcome": {"type": "object", "additionalProperties": {"type": "integer"}},
        "success_rate": {"type": ["number", "null"], "description": "succeeded / attempts"},
        "timeout_rate": {"type": ["number", "null"], "description": "timed_out / attempts"},
        "run_seconds": {
            "type": "object",
            "description": "run times of successful attempts",
            "required": ["count", "mean", "p50", "p95", "p99", "max"],
            "properties": {
                "count": {"type": "integer"},
                **{k: {"type": ["number", "null"]} for k in ("mean", "p50", "p95", "p99", "max")},
            },
        },
        "suggested_start_to_close": {
            "type": ["number", "null"],
            "description": "seconds: twice the p99 run time, once 20 attempts succeeded",
        },
    },
}

TASK_TYPE_DETAIL: Schema = {
    "allOf": [TASK_TYPE],
    "type": "object",
    "required": ["statistics"],
    "properties": {"statistics": TASK_TYPE_STATS},
}

TASK_TYPE_LIST: Schema = {
    "type": "object",
    "required": ["task_types"],
    "properties": {"task_types": {"type": "array", "items": TASK_TYPE}},
}

QUEUE: Schema = {
    "type": "object",
    "required": ["name", "concurrency", "paused", "ready", "scheduled", "running", "timeouts"],
    "properties": {
        "name": {"type": "string"},
        "concurrency": {"type": "integer", "minimum": 1},
        "paused": {"type": "boolean"},
        "ready": {"type": "integer", "minimum": 0, "description": "tasks that may start now"},
        "scheduled": {"type": "integer", "minimum": 0, "description": "tasks due later"},
        "running": {"type": "integer", "minimum": 0},
        "timeouts": TIMEOUTS,
    },
}

QUEUE_LIST: Schema = {
    "type": "object",
    "required": ["queues"],
    "properties": {"queues": {"type": "array", "items": QUEUE}},
}

SCHEDULE: Schema = {
    "type": "object",
    "required": [
        "name",
        "cron",
        "timezone",
        "task_type",
        "args",
        "catch_up",
        "paused",
        "next_fire",
    ],
    "properties": {
        "name": {"type": "string"},
        "cron": {"type": "string"},
        "timezone": {"type": "string"},
        "task_type": {"type": "string"},
        "args": {"type": "object"},
        "catch_up": {"type": "string", "enum": ["none", "latest", "all"]},
        "paused": {"type": "boolean"},
        "next_fire": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "the next tick (null while paused)",
        },
        **SCHEDULE_EXTRA_PROPERTIES,
    },
}

SCHEDULE_LIST: Schema = {
    "type": "object",
    "required": ["schedules"],
    "properties": {"schedules": {"type": "array", "items": SCHEDULE}},
}

AUDIT_REPORT: Schema = {
    "type": "object",
    "required": ["ok", "checked", "first_bad_position", "reason", "detail", "unchained"],
    "properties": {
        "ok": {"type": "boolean"},
        "checked": {"type": "integer", "minimum": 0, "description": "events verified"},
        "first_bad_position": {"type": ["integer", "null"]},
        "reason": {
            "type": "string",
            "enum": [
                "ok",
                "altered",
                "missing",
                "inserted",
                "chain-broken",
                "catch-up-failed",
                "archive-missing",
                "archive-altered",
            ],
        },
        "detail": {"type": "string"},
        "unchained": {"type": "integer", "minimum": 0, "description": "events not yet chained"},
        "undecodable": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "positions of chained rows whose event does not decode",
        },
    },
}

WORKER: Schema = {
    "type": "object",
    "required": [
        "worker",
        "host",
        "pid",
        "queues",
        "concurrency",
        "started_at",
        "last_seen",
        "seconds_since_seen",
        "running",
    ],
    "properties": {
        "worker": {"type": "string"},
        "host": {"type": "string"},
        "pid": {"type": "integer"},
        "queues": {"type": "array", "items": {"type": "string"}},
        "concurrency": {"type": "integer"},
        "started_at": TIME,
        "last_seen": {**TIME, "description": "its last heartbeat"},
        "seconds_since_seen": {"type": "number"},
        "registry_version": {
            "type": ["integer", "null"],
            "description": "the registry version it runs (null: not reported yet)",
        },
        "registry_current": {
            "type": "boolean",
            "description": "whether that is the latest recorded version",
        },
        "running": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "task_id",
                    "attempt",
                    "queue",
                    "lane",
                    "started_at",
                    "lease_expires_at",
                ],
                "properties": {
                    "task_id": UUID,
                    "attempt": {"type": "integer", "minimum": 1},
                    "queue": {"type": "string"},
                    "lane": NULLABLE_STRING,
                    "started_at": TIME,
                    "lease_expires_at": TIME,
                },
            },
        },
    },
}

WORKER_LIST: Schema = {
    "type": "object",
    "required": ["workers"],
    "properties": {
        "workers": {"type": "array", "items": WORKER},
        "registry_version": {
            "type": "integer",
            "description": "the latest recorded registry version (0: none recorded)",
        },
    },
}

HEALTH: Schema = {
    "type": "object",
    "required": ["status", "head", "projections"],
    "properties": {
        "status": {"type": "string", "enum": ["ok"]},
        "head": {"type": "integer", "minimum": 0},
        "projections": {
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "description": "position each projection has read up to",
        },
        "reads": {
            "type": "object",
            "required": ["target"],
            "description": "where lag-tolerant reads (lists, counts, the dataset) go now",
            "properties": {
                "target": {"type": "string", "enum": ["replica", "primary"]},
                "replica": {"type": "string", "description": "host:port/dbname"},
                "replica_lag_seconds": {"type": ["number", "null"], "minimum": 0},
                "read_max_lag_seconds": {"type": "number"},
                "reason": {"type": "string", "description": "why the primary"},
            },
        },
    },
}

COMPONENTS: dict[str, Schema] = {
    "Error": ERROR,
    "TaskSubmission": TASK_SUBMISSION,
    "GraphSubmission": GRAPH_SUBMISSION,
    "CancelRequest": CANCEL_REQUEST,
    "SignalRequest": SIGNAL_REQUEST,
    "Task": TASK,
    "TaskPage": TASK_PAGE,
    "GraphCreated": GRAPH_CREATED,
    "Event": EVENT,
    "History": HISTORY,
    "EventPage": EVENT_PAGE,
    "TaskGraph": TASK_GRAPH,
    "ReadySet": READY_SET,
    "TaskType": TASK_TYPE,
    "TaskTypeDetail": TASK_TYPE_DETAIL,
    "TaskTypeList": TASK_TYPE_LIST,
    "Queue": QUEUE,
    "QueueList": QUEUE_LIST,
    "Schedule": SCHEDULE,
    "AuditReport": AUDIT_REPORT,
    "ScheduleList": SCHEDULE_LIST,
    "WorkerList": WORKER_LIST,
    "Health": HEALTH,
}
