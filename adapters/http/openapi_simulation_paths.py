"""The OpenAPI document's part for ``POST /v1/simulations`` (``routes_simulations.py``): the
request body, and the report (``domain/simulation/report.py``) with its digest."""

from __future__ import annotations

from typing import Any

from execution_ledger.adapters.http.openapi_paths import _json, _operation
from execution_ledger.adapters.request_schemas import Schema
from execution_ledger.adapters.simulation import MAX_WORKERS

_MOMENT: Schema = {
    "type": "string",
    "description": "an ISO 8601 time with a zone, or a duration before now (e.g. 24h); "
    "400 otherwise",
}
SIMULATION_REQUEST: Schema = {
    "type": "object",
    "required": ["toml"],
    "additionalProperties": False,
    "properties": {
        "toml": {"type": "string", "description": "the configuration file's text to try"},
        "since": {**_MOMENT, "description": "window start: " + _MOMENT["description"]},
        "until": {**_MOMENT, "description": "window end (default: now): " + _MOMENT["description"]},
        "until_position": {
            "type": "integer",
            "description": "window end as a log position (from 0; 400 otherwise)",
        },
        "workers": {
            "type": "integer",
            "description": f"worker nodes simulated, 1 to {MAX_WORKERS} (default 1; 400 otherwise)",
        },
        "concurrency": {
            "type": "integer",
            "description": f"attempts each runs at once, 1 to {MAX_WORKERS} (default 10)",
        },
        "seed": {
            "type": "integer",
            "description": "seed of every random draw, 0 to 2^63-1 (default 0)",
        },
    },
}

_MS: Schema = {"type": ["number", "null"], "description": "milliseconds (null: no tasks)"}
_COUNT: Schema = {"type": "integer", "minimum": 0}
_COUNTS: Schema = {"type": "object", "additionalProperties": _COUNT}
_SPREAD: Schema = {
    "type": "object",
    "required": ["tasks", "p50_ms", "p95_ms", "p99_ms"],
    "properties": {"tasks": _COUNT, "p50_ms": _MS, "p95_ms": _MS, "p99_ms": _MS},
}
_WAITS: Schema = {
    "type": "object",
    "description": "by name: the waits (enqueue or not-before time to first start)",
    "additionalProperties": {
        "type": "object",
        "required": ["simulated", "recorded"],
        "properties": {"simulated": _SPREAD, "recorded": _SPREAD},
    },
}
_SERIES: Schema = {
    "type": "object",
    "required": ["bucket_seconds", "values"],
    "properties": {
        "bucket_seconds": {
            "type": "number",
            "description": "each value's stretch of simulated time (from 1 s, doubling so a "
            "long window keeps a bounded number of values)",
        },
        "values": {"type": "array", "items": {"type": "number"}},
    },
}
_INPUTS: Schema = {
    "type": "object",
    "description": "what the report was made of",
    "required": ["registry_sha256", "registry_source", "workers", "concurrency", "seed"],
    "properties": {
        "registry_sha256": {"type": "string", "description": "of the TOML text as sent"},
        "registry_source": {"type": "string"},
        "since": {"type": ["string", "null"]},
        "until": {"type": ["string", "null"]},
        "until_position": {"type": ["integer", "null"]},
        "workers": {"type": "integer"},
        "concurrency": {"type": "integer"},
        "seed": {"type": "integer"},
        "start_latency_ms": {"type": "number"},
        "hop_latency_ms": {"type": "number"},
        "calibrated": {"type": "boolean"},
        "first_position": {"type": "integer"},
        "last_position": {"type": "integer"},
    },
}
_OUTCOMES: Schema = {
    "type": "object",
    "required": ["simulated", "recorded", "why", "retries", "rate_limited"],
    "properties": {
        "simulated": {**_COUNTS, "description": "tasks by final state, simulated"},
        "recorded": {**_COUNTS, "description": "tasks by final state in the log (open: none)"},
        "why": {**_COUNTS, "description": "'final: reason' of the tasks not succeeded"},
        "retries": {
            "type": "object",
            "required": ["simulated", "recorded"],
            "properties": {"simulated": _COUNT, "recorded": _COUNT},
        },
        "rate_limited": {
            "type": "object",
            "required": ["tasks", "seconds"],
            "properties": {"tasks": _COUNT, "seconds": {"type": "number"}},
        },
    },
}
_FIDELITY: Schema = {
    "type": "object",
    "description": "how closely the simulated first starts follow the recorded ones",
    "required": ["tasks"],
    "properties": {
        "tasks": _COUNT,
        "start_order_spearman": {"type": "number"},
        "wait_error_mean_ms": _MS,
        "wait_error_p95_ms": _MS,
    },
}
REPORT: Schema = {
    "type": "object",
    "required": [
        "inputs",
        "tasks",
        "outcomes",
        "waits_by_queue",
        "waits_by_type",
        "worst",
        "tasks_ended",
        "queue_depth",
        "busiest_lanes",
        "learned_timeouts",
        "fidelity",
        "digest",
    ],
    "properties": {
        "inputs": _INPUTS,
        "tasks": _COUNT,
        "outcomes": _OUTCOMES,
        "waits_by_queue": _WAITS,
        "waits_by_type": _WAITS,
        "worst": {
            "type": "array",
            "description": "the longest simulated waits",
            "items": {
                "type": "object",
                "required": ["task_id", "type", "queue", "wait_ms"],
                "properties": {
                    "task_id": {"type": "string"},
                    "type": {"type": "string"},
                    "queue": {"type": "string"},
                    "wait_ms": _MS,
                },
            },
        },
        "tasks_ended": {
            **_SERIES,
            "description": "tasks ended in each bucket of simulated time",
        },
        "queue_depth": {
            **_SERIES,
            "description": "the most tasks waiting in each bucket of simulated time",
        },
        "busiest_lanes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["lane", "tasks", "total_wait_ms"],
                "properties": {"lane": {"type": "string"}, "tasks": _COUNT, "total_wait_ms": _MS},
            },
        },
        "learned_timeouts": {
            "type": "object",
            "description": "by type: the learned start_to_close and the window's attempts it "
            "would have cut short",
            "additionalProperties": {
                "type": "object",
                "required": ["suggested_start_to_close", "attempts", "would_cut"],
                "properties": {
                    "suggested_start_to_close": {"type": ["number", "null"]},
                    "attempts": _COUNT,
                    "would_cut": {"type": ["integer", "null"]},
                },
            },
        },
        "fidelity": _FIDELITY,
        "digest": {
            "type": "string",
            "description": "sha256 of the report's canonical JSON (without this key)",
        },
    },
}

COMPONENTS: dict[str, Schema] = {
    "SimulationRequest": SIMULATION_REQUEST,
    "SimulationReport": REPORT,
}


def simulation_paths() -> dict[str, Any]:
    return {
        "/v1/simulations": {
            "post": _operation(
                "simulations.run",
                "Replay a window of the log through a configuration file's registry on a "
                "simulated clock (admin); the report beside what happened. Reads the log "
                "only. 422: the file is invalid (its line named); 400: a bad time or number; "
                "429: another simulation is running on this server",
                {"200": _json("SimulationReport", "The report and its digest")},
                errors=(422,),
                body="SimulationRequest",
                tag="simulations",
            )
        }
    }
