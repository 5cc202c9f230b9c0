"""The OpenAPI document's part for what the web console added: the caller's access, the
activity per minute, the audit log and the last verification (with their response
schemas), and the console's own page and files (HTML and scripts, not JSON)."""

from __future__ import annotations

from typing import Any

from execution_ledger.adapters import request_schemas as schemas
from execution_ledger.adapters.event_log import MAX_EVENTS_PAGE, MAX_POSITION
from execution_ledger.adapters.http.openapi_paths import _json, _operation, _query
from execution_ledger.adapters.http.response_schemas import AUDIT_REPORT
from execution_ledger.adapters.ledger_reads import MAX_ACTIVITY_MINUTES
from execution_ledger.adapters.request_schemas import Schema

STRINGS: Schema = {"type": "array", "items": {"type": "string"}}
ACCESS: Schema = {
    "type": "object",
    "required": [
        "principal",
        "role",
        "signed_in",
        "principals_configured",
        "may_cancel",
        "may_control",
    ],
    "properties": {
        "principal": {"type": "string"},
        "signed_in": {
            "type": "boolean",
            "description": "false: principals are configured and no token was sent",
        },
        "role": {"type": "string"},
        "principals_configured": {"type": "boolean"},
        "may_cancel": {"type": "boolean", "description": "tasks matching task_types/adapters"},
        "task_types": STRINGS,
        "adapters": STRINGS,
        "adhoc": {"type": "boolean"},
        "may_control": {
            "type": "boolean",
            "description": "pause and resume queues and schedules, verify the audit chain",
        },
    },
}
COUNT: Schema = {"type": "integer", "minimum": 0}
ACTIVITY: Schema = {
    "type": "object",
    "required": ["minutes"],
    "properties": {
        "minutes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["minute", "succeeded", "failed", "other"],
                "properties": {
                    "minute": schemas.TIME,
                    "succeeded": COUNT,
                    "failed": COUNT,
                    "other": COUNT,
                },
            },
        }
    },
}
AUDIT_ENTRY: Schema = {
    "type": "object",
    "required": ["position", "time", "type", "aggregate", "subject_id", "principal", "actor"],
    "properties": {
        "position": COUNT,
        "time": schemas.TIME,
        "type": {"type": "string"},
        "aggregate": {"type": "string"},
        "subject_id": schemas.UUID,
        "version": {"type": "integer"},
        "principal": {"type": "string"},
        "actor": {"type": "string"},
        "data": {"type": "object"},
    },
}
AUDIT_LOG: Schema = {
    "type": "object",
    "required": ["entries", "next_after", "head"],
    "properties": {
        "entries": {"type": "array", "items": AUDIT_ENTRY},
        "next_after": {
            "type": ["integer", "null"],
            "description": "pass as ?after= to continue; null once the head is reached",
        },
        "head": COUNT,
    },
}
LAST_VERIFICATION: Schema = {
    "type": "object",
    "required": ["last_verification"],
    "properties": {
        "last_verification": {
            "oneOf": [
                {"type": "null"},
                {
                    **AUDIT_REPORT,
                    "required": [*AUDIT_REPORT["required"], "verified_at", "by"],
                    "properties": {
                        **AUDIT_REPORT["properties"],
                        "verified_at": schemas.TIME,
                        "by": {"type": "string"},
                    },
                },
            ]
        }
    },
}
COMPONENTS: dict[str, Schema] = {
    "Access": ACCESS,
    "Activity": ACTIVITY,
    "AuditLog": AUDIT_LOG,
    "LastVerification": LAST_VERIFICATION,
}


def _audit_filters() -> list[dict[str, Any]]:
    return [
        _query("task", schemas.UUID, "only this task's events"),
        _query("principal", {"type": "string"}, "on whose authority ('system' for workers)"),
        _query("actor", {"type": "string"}, "who did it (a worker's name, a principal)"),
        _query("type", {"type": "string"}, "event types, comma-separated (TaskCancelled,...)"),
        _query("since", schemas.TIME, "only events at or after this time"),
        _query("until", schemas.TIME, "only events before this time"),
        _query("after", {"type": "integer", "minimum": 0, "maximum": MAX_POSITION}, "position"),
        _query(
            "limit", {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS_PAGE}, "page size"
        ),
    ]


def _console_file(route: str, summary: str, media: str, **options: Any) -> dict[str, Any]:
    operation = _operation(
        route,
        summary,
        {"200": {"description": summary, "content": {media: {"schema": {"type": "string"}}}}},
        public=True,
        tag="console",
        **options,
    )
    return {"get": operation}


def console_paths() -> dict[str, Any]:
    return {
        "/v1/access": {
            "get": _operation(
                "access.get",
                "Who the caller is and what its role may do (the console offers only these)",
                {"200": _json("Access", "The caller's principal, role and permissions")},
                errors=(401,),
                public=True,
                tag="access",
            )
        },
        "/v1/activity": {
            "get": _operation(
                "activity.get",
                "Tasks ended per minute over the last minutes, by final state",
                {"200": _json("Activity", "One entry per minute, oldest first")},
                parameters=[
                    _query(
                        "minutes",
                        {"type": "integer", "minimum": 1, "maximum": MAX_ACTIVITY_MINUTES},
                        "how many minutes back (default 60)",
                    )
                ],
                tag="queues",
            )
        },
        "/v1/audit/log": {
            "get": _operation(
                "audit.log",
                "The audit log: events with principal and actor, oldest first, filtered",
                {"200": _json("AuditLog", "A page of the audit log")},
                parameters=_audit_filters(),
                tag="audit",
            )
        },
        "/v1/audit/last-verification": {
            "get": _operation(
                "audit.last",
                "The last chain verification this server ran (null if none since it started)",
                {"200": _json("LastVerification", "The last verdict, with when and by whom")},
                tag="audit",
            )
        },
        "/": _console_file("console.page", "The web console's page", "text/html"),
        "/console/{file}": _console_file(
            "console.file",
            "A file of the web console (ES module, CSS, vendored licence)",
            "text/javascript",
            errors=(404,),
            parameters=[
                {
                    "name": "file",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "path under the console's static folder",
                }
            ],
        ),
    }
