"""The OpenAPI 3.1 document of the API, served at ``/openapi.json``.

Written from the same schemas the handlers validate request bodies against
(``schemas.py``); each operation's ``operationId`` is its route's name, and a test checks
that the document and the app's routes list the same operations.
"""

from __future__ import annotations

from typing import Any

from execution_ledger.adapters.http import (
    openapi_bulk_paths,
    openapi_console_paths,
    openapi_registry_paths,
    openapi_schedule_paths,
    openapi_simulation_paths,
    response_schemas,
)
from execution_ledger.adapters.http.openapi_paths import Operation, api_paths
from execution_ledger.domain.registry import Registry

# Where a created task's id leads (OpenAPI links: clients and fuzzers follow them).
TASK_LINKS = {
    "GetTask": ("tasks.get", "task_id"),
    "GetHistory": ("tasks.history", "task_id"),
    "CancelTask": ("tasks.cancel", "task_id"),
    "RetryTask": ("tasks.retry", "task_id"),
    "GetGraph": ("graph.get", "task"),
}


def _operations(paths: dict[str, Any]) -> dict[str, Operation]:
    return {op["operationId"]: op for item in paths.values() for op in item.values()}


def _add_links(paths: dict[str, Any]) -> None:
    enqueue = _operations(paths)["tasks.enqueue"]
    links = {
        name: {"operationId": operation, "parameters": {parameter: "$response.body#/id"}}
        for name, (operation, parameter) in TASK_LINKS.items()
    }
    for status in ("200", "201", "202"):
        enqueue["responses"][status]["links"] = links


def _add_examples(paths: dict[str, Any], registry: Registry) -> None:
    """Requests that work against this registry: types needing no argument, known queues."""
    operations = _operations(paths)
    simple = [
        name
        for name, task_type in sorted(registry.task_types.items())
        if not (task_type.schema or {}).get("required")
    ]
    if simple:
        task_body = operations["tasks.enqueue"]["requestBody"]["content"]["application/json"]
        task_body["examples"] = {
            name: {"value": {"type": name, "args": {}, "tags": ["example"]}} for name in simple
        }
        graph_body = operations["graphs.enqueue"]["requestBody"]["content"]["application/json"]
        graph_body["example"] = {
            "tasks": [
                {"ref": "first", "type": simple[0]},
                {"ref": "then", "type": simple[-1], "depends_on": ["first"]},
            ]
        }
    examples = {
        "name": sorted(registry.task_types)[0] if registry.task_types else None,
        "queue": registry.default_queue,
    }
    for route, parameter, key in (
        ("task_types.get", "name", "name"),
        ("queues.pause", "name", "queue"),
        ("queues.resume", "name", "queue"),
        ("ready.list", "queue", "queue"),
    ):
        for spec in operations[route]["parameters"]:
            if spec["name"] == parameter and examples[key] is not None:
                spec["example"] = examples[key]


def openapi_document(registry: Registry | None = None) -> dict[str, Any]:
    """The document; with ``registry``, examples of requests that work against it."""
    paths = api_paths() | openapi_console_paths.console_paths() | openapi_bulk_paths.bulk_paths()
    paths |= openapi_registry_paths.registry_paths()
    paths |= openapi_simulation_paths.simulation_paths()
    for path, operations in openapi_schedule_paths.schedule_paths().items():
        paths[path] = paths.get(path, {}) | operations
    _add_links(paths)
    if registry is not None:
        _add_examples(paths, registry)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Execution Ledger",
            "version": "1",
            "description": "An event-sourced execution ledger: enqueue tasks and DAGs, wait "
            "for results, read tasks, their histories and the global event log. Errors are "
            '{"error": {"code", "message"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": response_schemas.COMPONENTS
            | openapi_console_paths.COMPONENTS
            | openapi_bulk_paths.COMPONENTS
            | openapi_schedule_paths.COMPONENTS
            | openapi_registry_paths.COMPONENTS
            | openapi_simulation_paths.COMPONENTS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
