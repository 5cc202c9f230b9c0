"""The paths of the OpenAPI document: every operation with its parameters, request body and
responses (each ``operationId`` is the route's name)."""

from __future__ import annotations

from typing import Any

from execution_ledger.adapters import request_schemas as schemas
from execution_ledger.adapters.event_log import (
    MAX_EVENTS_PAGE,
    MAX_POSITION,
    TOPICS_BY_EVENT_NAME,
)
from execution_ledger.adapters.ledger_reads import MAX_PAGE

Operation = dict[str, Any]

ERROR_MEANING = {
    400: "Bad JSON or a bad query parameter",
    401: "No bearer token, or an unknown one",
    403: "The principal's role does not allow this",
    404: "No such task, task type, queue or route",
    409: "The task or queue cannot make this transition now",
    408: "The body did not arrive within the server's body read timeout",
    413: "The body is larger than the server accepts",
    415: "The body is not sent as Content-Type: application/json",
    421: "The Host header names neither this server nor one of its allowed hosts",
    422: "The body does not match the schema, or the submission is refused (unknown type, "
    "args against the type's schema, dependency cycle, unknown dependency)",
    429: "Too many requests, or too many waiting calls; see Retry-After",
    503: "The database is unavailable; see Retry-After",
}
# Every authenticated operation may answer these.
COMMON_ERRORS = (400, 401, 403, 429, 503)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema_name)}},
    }


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json("Error", ERROR_MEANING[s]) for s in sorted(set(statuses))}


def _query(
    name: str, schema: dict[str, Any], description: str, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def _path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


def _operation(
    route: str,
    summary: str,
    responses: dict[str, Any],
    errors: tuple[int, ...] = (),
    parameters: list[dict[str, Any]] | None = None,
    body: str | None = None,
    body_required: bool = True,
    public: bool = False,
    tag: str = "tasks",
) -> Operation:
    operation: Operation = {
        "operationId": route,
        "summary": summary,
        "tags": [tag],
        "parameters": parameters or [],
        "responses": {
            **responses,
            **_errors(*(() if public else COMMON_ERRORS), *errors, 421),
            **(_errors(408, 415) if body is not None else {}),
        },
    }
    if public:
        operation["security"] = []
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return operation


POSITION = {"type": "integer", "minimum": 0, "maximum": MAX_POSITION}
TASK_ID = _path("task_id", schemas.UUID, "the task's id")
LIMIT = _query(
    "limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "page size (default 50)"
)
_EVENT_NAME = "(" + "|".join(sorted(TOPICS_BY_EVENT_NAME)) + ")"
EVENT_FILTERS = [
    _query(
        "type",
        {"type": "string", "pattern": f"^{_EVENT_NAME}(,{_EVENT_NAME})*$"},
        "event types, comma-separated (" + ", ".join(sorted(TOPICS_BY_EVENT_NAME)) + ")",
    ),
    _query("task", schemas.UUID, "only this task's events"),
    _query(
        "principal",
        {"type": "string"},
        "only events caused by this principal ('system' for workers)",
    ),
    _query(
        "since",
        {"type": "string", "format": "date-time"},
        "only events at or after this time (ISO 8601 with a zone)",
    ),
    _query(
        "until",
        {"type": "string", "format": "date-time"},
        "only events at or before this time (ISO 8601 with a zone)",
    ),
]


def api_paths() -> dict[str, Any]:
    return {
        "/v1/tasks": {
            "post": _operation(
                "tasks.enqueue",
                "Enqueue one task; with ?wait, wait for it to end (a synchronous call)",
                {
                    "200": _json(
                        "Task",
                        "Waited: the task ended (see state, result, error); or, without wait, "
                        "the task the enqueue was coalesced into (nothing new enqueued): the "
                        "holder of its idempotency or singleton key, or the pending task of "
                        "its debounce key; `coalesced` says which",
                    ),
                    "201": _json("Task", "Enqueued"),
                    "202": _json("Task", "Waited: the task has not ended yet"),
                },
                errors=(413, 422),
                parameters=[
                    _query(
                        "wait",
                        {"type": "number", "minimum": 0, "maximum": schemas.MAX_WAIT_SECONDS},
                        "seconds to wait for a terminal state (a server may wait less)",
                    )
                ],
                body="TaskSubmission",
            ),
            "get": _operation(
                "tasks.list",
                "List tasks, newest first, with filters and a cursor (from the task view)",
                {"200": _json("TaskPage", "A page of tasks")},
                parameters=[
                    _query("state", schemas.STATE, "only tasks in this state"),
                    _query("type", {"type": "string"}, "only tasks of this type"),
                    _query("queue", {"type": "string"}, "only tasks of this queue"),
                    _query("lane", {"type": "string"}, "only tasks of this lane"),
                    _query("tag", {"type": "string"}, "only tasks with this tag"),
                    _query("since", schemas.TIME, "only tasks enqueued at or after this time"),
                    _query("until", schemas.TIME, "only tasks enqueued before this time"),
                    _query(
                        "text",
                        {"type": "string"},
                        "only tasks whose args or error contain this text (any case)",
                    ),
                    LIMIT,
                    _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
                ],
            ),
        },
        "/v1/graphs": {
            "post": _operation(
                "graphs.enqueue",
                "Enqueue a DAG atomically; tasks name each other by ref (or name stored ids)",
                {"201": _json("GraphCreated", "Every task enqueued (ref -> id)")},
                errors=(413, 422),
                body="GraphSubmission",
            )
        },
        "/v1/tasks/{task_id}": {
            "get": _operation(
                "tasks.get",
                "One task, current to its last event",
                {"200": _json("Task", "The task")},
                errors=(404,),
                parameters=[TASK_ID],
            )
        },
        "/v1/tasks/{task_id}/history": {
            "get": _operation(
                "tasks.history",
                "A task's events in order, with positions, times and principals",
                {"200": _json("History", "The task's events")},
                errors=(404,),
                parameters=[TASK_ID],
            )
        },
        "/v1/tasks/{task_id}/cancel": {
            "post": _operation(
                "tasks.cancel",
                "Cancel a waiting or running task",
                {"200": _json("Task", "Cancelled")},
                errors=(404, 409, 413, 422),
                parameters=[TASK_ID],
                body="CancelRequest",
                body_required=False,
            )
        },
        "/v1/tasks/{task_id}/retry": {
            "post": _operation(
                "tasks.retry",
                "Run a failed, cancelled or skipped task again (one more attempt)",
                {"200": _json("Task", "Scheduled again")},
                errors=(404, 409),
                parameters=[TASK_ID],
            )
        },
        "/v1/tasks/{task_id}/signal": {
            "post": _operation(
                "tasks.signal",
                "Deliver a named signal (an approval, an input) to a task waiting for it",
                {"200": _json("Task", "Delivered (the task is ready once it has them all)")},
                errors=(403, 404, 409, 413, 422),
                parameters=[TASK_ID],
                body="SignalRequest",
            )
        },
        "/v1/graph": {
            "get": _operation(
                "graph.get",
                "The connected DAG of a task: nodes with states, and edges",
                {"200": _json("TaskGraph", "The graph (from the readiness projection)")},
                errors=(404,),
                parameters=[_query("task", schemas.UUID, "a task of the graph", required=True)],
            )
        },
        "/v1/ready": {
            "get": _operation(
                "ready.list",
                "The tasks of a queue that may start now, in dispatch order",
                {"200": _json("ReadySet", "The ready set")},
                errors=(404,),
                parameters=[_query("queue", {"type": "string"}, "the queue", required=True), LIMIT],
            )
        },
        "/v1/task-types": {
            "get": _operation(
                "task_types.list",
                "Every task type of the registry",
                {"200": _json("TaskTypeList", "The registry's task types")},
                tag="registry",
            )
        },
        "/v1/task-types/{name}": {
            "get": _operation(
                "task_types.get",
                "One task type with statistics of its tasks",
                {"200": _json("TaskTypeDetail", "The task type")},
                errors=(404,),
                parameters=[_path("name", {"type": "string"}, "the type's name")],
                tag="registry",
            )
        },
        "/v1/queues": {
            "get": _operation(
                "queues.list",
                "Queues with limits, paused flags, depth and running attempts",
                {"200": _json("QueueList", "The queues")},
                tag="queues",
            )
        },
        "/v1/queues/{name}/pause": {
            "post": _operation(
                "queues.pause",
                "Stop claiming from a queue on every node (admin)",
                {"200": _json("Queue", "Paused")},
                errors=(404, 409),
                parameters=[_path("name", {"type": "string"}, "the queue")],
                tag="queues",
            )
        },
        "/v1/queues/{name}/resume": {
            "post": _operation(
                "queues.resume",
                "Claim from a paused queue again (admin)",
                {"200": _json("Queue", "Resumed")},
                errors=(404, 409),
                parameters=[_path("name", {"type": "string"}, "the queue")],
                tag="queues",
            )
        },
        "/v1/schedules": {
            "get": _operation(
                "schedules.list",
                "Cron schedules with their next fire times and paused flags",
                {"200": _json("ScheduleList", "The schedules")},
                tag="schedules",
            )
        },
        "/v1/schedules/{name}/pause": {
            "post": _operation(
                "schedules.pause",
                "Stop firing a schedule on every node (admin); paused ticks are not caught up",
                {"200": _json("Schedule", "Paused")},
                errors=(404, 409),
                parameters=[_path("name", {"type": "string"}, "the schedule")],
                tag="schedules",
            )
        },
        "/v1/schedules/{name}/resume": {
            "post": _operation(
                "schedules.resume",
                "Fire a paused schedule again (admin)",
                {"200": _json("Schedule", "Resumed")},
                errors=(404, 409),
                parameters=[_path("name", {"type": "string"}, "the schedule")],
                tag="schedules",
            )
        },
        "/v1/audit/verify": {
            "get": _operation(
                "audit.verify",
                "Verify the hash chain over the event log (admin): ok, or the first position "
                "where the log was altered",
                {"200": _json("AuditReport", "The verdict (see ok and reason)")},
                tag="audit",
            )
        },
        "/v1/workers": {
            "get": _operation(
                "workers.list",
                "Worker nodes with their last heartbeat and running attempts",
                {"200": _json("WorkerList", "The worker nodes")},
                tag="queues",
            )
        },
        "/v1/dataset": {
            "get": _operation(
                "dataset.export",
                "The learning dataset (one row per attempt) replayed from the event log, "
                "streamed as JSONL, CSV or Parquet",
                {
                    "200": {
                        "description": "The rows in log order (see docs/dataset.md)",
                        "content": {
                            "application/x-ndjson": {"schema": {"type": "string"}},
                            "text/csv": {"schema": {"type": "string"}},
                            "application/vnd.apache.parquet": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                        },
                    }
                },
                parameters=[
                    _query(
                        "format",
                        {"type": "string", "enum": ["jsonl", "csv", "parquet"]},
                        "jsonl (default), csv or parquet",
                    ),
                    _query(
                        "until",
                        {"type": "string"},
                        "the last event: a log position, or an ISO 8601 time with a zone",
                    ),
                    _query(
                        "since",
                        {"type": "string"},
                        "only attempts ended after this position, or finished at or after "
                        "this time",
                    ),
                    _query("type", {"type": "string"}, "only attempts of this task type"),
                    _query(
                        "kind",
                        {"type": "string", "enum": ["attempts", "workflow"]},
                        "attempts (default), or workflow: one JSONL row per workflow step "
                        "(children, signals, progress; docs/dataset.md)",
                    ),
                ],
                tag="dataset",
            )
        },
        "/v1/events": {
            "get": _operation(
                "events.list",
                "The global event log after a position, with filters",
                {"200": _json("EventPage", "A page of events")},
                parameters=[
                    _query("after", POSITION, "events after this position"),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS_PAGE},
                        "page size (default 100)",
                    ),
                    *EVENT_FILTERS,
                ],
                tag="events",
            )
        },
        "/v1/events/stream": {
            "get": _operation(
                "events.stream",
                "Live events as server-sent events; each id is the log position",
                {
                    "200": {
                        "description": "An endless text/event-stream: 'id: POSITION', "
                        "'event: TYPE', 'data: EVENT (JSON)'",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    }
                },
                parameters=[
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                        "description": "resume after this position (sent on reconnect)",
                    },
                    _query(
                        "after",
                        POSITION,
                        "start after this position (default: new events only)",
                    ),
                    *EVENT_FILTERS,
                ],
                tag="events",
            )
        },
        "/healthz": {
            "get": _operation(
                "service.health",
                "Liveness: the database answers",
                {"200": _json("Health", "Healthy")},
                errors=(503,),
                public=True,
                tag="service",
            )
        },
        "/metrics": {
            "get": _operation(
                "service.metrics",
                "Prometheus metrics: queue depth, running, throughput and latency histograms",
                {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                tag="service",
            )
        },
        "/openapi.json": {
            "get": _operation(
                "service.openapi",
                "This document",
                {
                    "200": {
                        "description": "The OpenAPI document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
                public=True,
                tag="service",
            )
        },
    }
