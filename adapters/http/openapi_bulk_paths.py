"""The OpenAPI document's part for bulk actions: ``POST /v1/bulk`` (dry run or start) and
``GET /v1/bulk/{bulk_id}`` (progress), with their bodies."""

from __future__ import annotations

from typing import Any

from execution_ledger.adapters.http.bulk_schemas import BULK_ACTION, BULK_DRY_RUN, BULK_REQUEST
from execution_ledger.adapters.http.openapi_paths import _json, _operation, _path
from execution_ledger.adapters.request_schemas import UUID, Schema

COMPONENTS: dict[str, Schema] = {
    "BulkRequest": BULK_REQUEST,
    "BulkDryRun": BULK_DRY_RUN,
    "BulkAction": BULK_ACTION,
}

# Where a started action's id leads (clients and fuzzers follow it).
PROGRESS_LINK = {
    "GetBulk": {"operationId": "bulk.get", "parameters": {"bulk_id": "$response.body#/id"}}
}


def bulk_paths() -> dict[str, Any]:
    return {
        "/v1/bulk": {
            "post": _operation(
                "bulk.start",
                "Cancel, retry, reprioritise or move every task matching a filter. With "
                "dry_run: the count and a sample, nothing changed. Else the action is recorded "
                "and runs in batches of 500 tasks (one transaction each): 202 with its id; "
                "GET /v1/bulk/{bulk_id} follows it. 400: a bad action, filter, priority or "
                "queue; 403: the role may not act on some of the matches (nothing changed)",
                {
                    "200": _json("BulkDryRun", "Dry run: what would change"),
                    "202": {**_json("BulkAction", "Recorded and started"), "links": PROGRESS_LINK},
                },
                errors=(413, 422),
                body="BulkRequest",
                tag="bulk",
            )
        },
        "/v1/bulk/{bulk_id}": {
            "get": _operation(
                "bulk.get",
                "A bulk action's progress: matched, changed and skipped so far, and its state "
                "(running, completed, stopped)",
                {"200": _json("BulkAction", "The bulk action")},
                errors=(404,),
                parameters=[_path("bulk_id", UUID, "the bulk action's id")],
                tag="bulk",
            )
        },
    }
