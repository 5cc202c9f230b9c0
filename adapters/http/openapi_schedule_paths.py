"""The OpenAPI document's part for run-time schedules: create, read one, update, delete and
backfill (listing, pause and resume are in ``openapi_paths.py``), with their bodies."""

from __future__ import annotations

from typing import Any

from execution_ledger.adapters.http.openapi_paths import _json, _operation, _path
from execution_ledger.adapters.http.schedule_schemas import (
    BACKFILL_REQUEST,
    BACKFILL_RESULT,
    SCHEDULE_DEFINITION,
    SCHEDULE_DELETED,
    SCHEDULE_UPDATE,
)
from execution_ledger.adapters.request_schemas import Schema

COMPONENTS: dict[str, Schema] = {
    "ScheduleDefinition": SCHEDULE_DEFINITION,
    "ScheduleUpdate": SCHEDULE_UPDATE,
    "BackfillRequest": BACKFILL_REQUEST,
    "Backfill": BACKFILL_RESULT,
    "ScheduleDeleted": SCHEDULE_DELETED,
}

_NAME = _path("name", {"type": "string"}, "the schedule")


def schedule_paths() -> dict[str, Any]:
    return {
        "/v1/schedules": {
            "post": _operation(
                "schedules.create",
                "Define a run-time schedule (admin, or a role with may_schedule); every node "
                "fires it from its next scheduler pass. 400: the definition is refused "
                "(cron, time zone, task type, args); 409: the name is taken",
                {"201": _json("Schedule", "Defined")},
                errors=(400, 409, 422),
                body="ScheduleDefinition",
                tag="schedules",
            )
        },
        "/v1/schedules/{name}": {
            "get": _operation(
                "schedules.get",
                "One schedule (file or run-time) with its next fire time and skipped ticks",
                {"200": _json("Schedule", "The schedule")},
                errors=(404,),
                parameters=[_NAME],
                tag="schedules",
            ),
            "patch": _operation(
                "schedules.update",
                "Change keys of a run-time schedule (a file schedule is changed in the file: "
                "409); the answer's changes map each changed key to [old, new]",
                {"200": _json("Schedule", "Updated")},
                errors=(400, 404, 409, 422),
                parameters=[_NAME],
                body="ScheduleUpdate",
                tag="schedules",
            ),
            "delete": _operation(
                "schedules.delete",
                "Delete a run-time schedule; no node fires it after its next pass",
                {"200": _json("ScheduleDeleted", "Deleted")},
                errors=(404, 409),
                parameters=[_NAME],
                tag="schedules",
            ),
        },
        "/v1/schedules/{name}/backfill": {
            "post": _operation(
                "schedules.backfill",
                "Enqueue every tick of a time range (each once: its tick key), or count them "
                "with dry_run; at most 1000 ticks",
                {"200": _json("Backfill", "The ticks in the range, enqueued now and before")},
                errors=(400, 404, 422),
                parameters=[_NAME],
                body="BackfillRequest",
                tag="schedules",
            )
        },
    }
