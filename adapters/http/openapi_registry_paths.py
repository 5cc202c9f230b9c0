"""The OpenAPI document's part for registry versions: the list, one version, and applying
a configuration file's registry (admin), with their bodies."""

from __future__ import annotations

from typing import Any

from execution_ledger.adapters.http.openapi_paths import _json, _operation, _path
from execution_ledger.adapters.request_schemas import TIME, Schema

_DIFF: Schema = {
    "type": "array",
    "description": "each key added, removed or changed, by path from the top",
    "items": {
        "type": "object",
        "required": ["op", "path"],
        "properties": {
            "op": {"type": "string", "enum": ["added", "removed", "changed"]},
            "path": {"type": "array", "items": {"type": "string"}},
            "old": {"description": "the value before (not for an added key)"},
            "new": {"description": "the value after (not for a removed key)"},
        },
    },
}
_SUMMARY: Schema = {
    "type": "object",
    "required": ["added", "removed", "changed", "changes"],
    "properties": {
        "added": {"type": "integer", "minimum": 0},
        "removed": {"type": "integer", "minimum": 0},
        "changed": {"type": "integer", "minimum": 0},
        "changes": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the first ten as '+ path', '- path', '~ path'",
        },
    },
}
EVIDENCE: Schema = {
    "type": ["object", "null"],
    "description": "the simulation report the change was proposed with (null: none)",
    "required": ["kind", "report_sha256", "inputs", "summary"],
    "properties": {
        "kind": {"type": "string", "enum": ["simulation"]},
        "report_sha256": {"type": "string", "description": "of the report's canonical JSON"},
        "inputs": {"type": "object", "description": "what the report was made of"},
        "summary": {
            "type": "object",
            "description": "tasks, outcomes and p99 waits per queue, simulated and recorded",
        },
    },
}
_VERSION_PROPERTIES: dict[str, Schema] = {
    "version": {"type": "integer", "minimum": 1},
    "digest": {"type": "string", "description": "sha256: of the canonical document"},
    "at": TIME,
    "by": {"type": "string", "description": "the principal or node that recorded it"},
    "source": {"type": "string", "description": "the file (or request) it came from"},
    "forced": {"type": "boolean", "description": "recorded past refusals"},
    "position": {"type": "integer", "minimum": 1},
    "summary": _SUMMARY,
    "evidence": EVIDENCE,
}
VERSION_SUMMARY: Schema = {
    "type": "object",
    "required": list(_VERSION_PROPERTIES),
    "properties": _VERSION_PROPERTIES,
}
VERSION: Schema = {
    "type": "object",
    "required": [*_VERSION_PROPERTIES, "document", "diff"],
    "properties": {
        **_VERSION_PROPERTIES,
        "document": {
            "type": "object",
            "description": "the registry's tables as written, principals without token hashes",
        },
        "diff": _DIFF,
    },
}
VERSION_LIST: Schema = {
    "type": "object",
    "required": ["versions", "latest", "running_here"],
    "properties": {
        "versions": {"type": "array", "items": VERSION_SUMMARY},
        "latest": {"type": "integer", "minimum": 0, "description": "0: none recorded"},
        "running_here": {
            "type": ["integer", "null"],
            "description": "the version this server runs (null: its file is not the latest)",
        },
    },
}
APPLY_REQUEST: Schema = {
    "type": "object",
    "required": ["toml"],
    "additionalProperties": False,
    "properties": {
        "toml": {"type": "string", "description": "the configuration file's text"},
        "force": {"type": "boolean", "description": "record a change that breaks live work"},
        "dry_run": {"type": "boolean", "description": "say what would change; record nothing"},
        "report": {
            "type": ["string", "object"],
            "description": "the report `ledger simulate --json` wrote (its text), or the "
            "answer of POST /v1/simulations (with its digest), for this TOML text: checked "
            "(intact, made for this text, reproduced by a re-run) and recorded as the "
            "change's evidence",
        },
    },
}
APPLIED: Schema = {
    "type": "object",
    "required": ["version", "recorded", "dry_run", "forced", "reasons", "summary", "diff"],
    "properties": {
        "version": {
            "type": "integer",
            "minimum": 0,
            "description": "the latest version afterwards (a dry run: before)",
        },
        "recorded": {"type": "boolean"},
        "dry_run": {"type": "boolean"},
        "forced": {"type": "boolean"},
        "reasons": {
            "type": "array",
            "items": {"type": "string"},
            "description": "why it breaks live work (forced past, or a dry run's refusals)",
        },
        "summary": _SUMMARY,
        "diff": _DIFF,
        "evidence": EVIDENCE,
    },
}

COMPONENTS: dict[str, Schema] = {
    "RegistryVersionList": VERSION_LIST,
    "RegistryVersion": VERSION,
    "RegistryApplyRequest": APPLY_REQUEST,
    "RegistryApplied": APPLIED,
}


def registry_paths() -> dict[str, Any]:
    return {
        "/v1/registry/versions": {
            "get": _operation(
                "registry.versions",
                "The recorded registry versions, newest first: when, by whom, what changed",
                {"200": _json("RegistryVersionList", "The versions")},
                tag="registry",
            ),
            "post": _operation(
                "registry.apply",
                "Record a configuration file's registry as the next version (admin). The "
                "same registry records nothing (200); a change that would break queued or "
                "running work is refused with its reasons (409) unless force; 422: the file "
                "is invalid, or the report given as evidence is refused. Running nodes take "
                "it within a few seconds",
                {
                    "200": _json("RegistryApplied", "Nothing recorded (no change, or dry run)"),
                    "201": _json("RegistryApplied", "Recorded"),
                },
                errors=(409, 422),
                body="RegistryApplyRequest",
                tag="registry",
            ),
        },
        "/v1/registry/versions/{number}": {
            "get": _operation(
                "registry.version",
                "One registry version: its document and its diff from the version before",
                {"200": _json("RegistryVersion", "The version")},
                errors=(404,),
                parameters=[_path("number", {"type": "string"}, "the version number")],
                tag="registry",
            )
        },
    }
