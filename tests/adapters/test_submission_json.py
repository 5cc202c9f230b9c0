"""The check of submission bodies: ``jsonschema_rs`` decides, ``jsonschema`` names the place
of a refusal; the two must agree on every body, or a body would pass that the reference
refuses (or be refused with no place to name)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from execution_ledger.adapters import request_schemas as schemas
from execution_ledger.adapters.submission_json import _matches, submitted_task, validated
from execution_ledger.domain.errors import InvalidSubmission

TASK_BODIES: list[Any] = [
    {"type": "noop"},
    {"type": "noop", "args": {"i": 1, "deep": [{"x": None}]}},
    {"type": "noop", "priority": 1000},
    {"type": "noop", "priority": 1001},
    {"type": "noop", "priority": 5.0},  # an integer in JSON Schema's sense
    {"type": "noop", "priority": 5.5},
    {"type": "noop", "priority": True},  # a boolean is no integer
    {"type": "noop", "priority": 10**30},
    {"type": "noop", "args": {"huge": 10**30, "nan": float("nan")}},
    {"type": "no op"},
    {"type": ""},
    {"type": "x" * 101},
    {"type": "noop", "extra": 1},
    {"type": "noop", "depends_on": ["not-a-uuid"]},  # formats are not asserted
    {"type": "noop", "run_at": "garbage"},
    {"type": "noop", "tags": ["a", "a"]},
    {"type": "noop", "tags": "a"},
    {"type": "noop", "timeouts": {"start_to_close": "5s"}},
    {"type": "noop", "timeouts": {"start_to_close": -1}},
    {"type": "noop", "timeouts": {"no_such_kind": 1}},
    {"type": "noop", "max_attempts": 0},
    {"type": "noop", "inputs": True},
    {"type": "noop", "inputs": {"a": 1}},
    {"args": {}},
    [],
    "noop",
    None,
]

GRAPH_BODIES: list[Any] = [
    {"tasks": [{"ref": "a", "type": "noop"}, {"ref": "b", "type": "noop", "depends_on": ["a"]}]},
    {"tasks": []},
    {"tasks": [{"ref": "#a", "type": "noop"}]},
    {"tasks": [{"ref": "a"}]},
    {"tasks": [{"ref": "a", "type": "noop", "depends_on": [""]}]},
]


@pytest.mark.parametrize(
    ("schema", "body"),
    [(schemas.TASK_SUBMISSION, b) for b in TASK_BODIES]
    + [(schemas.GRAPH_SUBMISSION, b) for b in GRAPH_BODIES],
)
def test_the_fast_check_agrees_with_the_reference_validator(schema: Any, body: Any) -> None:
    reference = jsonschema.Draft202012Validator(schema).is_valid(body)
    assert _matches(body, schema) is reference


def test_a_body_that_matches_comes_back_unchanged() -> None:
    body = {"type": "noop", "args": {"i": 1}, "priority": 3}
    assert validated(body, schemas.TASK_SUBMISSION, "the task") is body
    assert submitted_task(body).priority == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"type": "noop", "priority": 1001}, "the task at priority: 1001 is greater than"),
        ({"type": "no op"}, "the task at type: 'no op' does not match"),
        ({"args": {}}, "the task at (root): 'type' is a required property"),
        ({"type": "noop", "extra": 1}, "the task at (root): Additional properties"),
    ],
)
def test_a_refused_body_is_named_at_its_first_wrong_place(body: Any, message: str) -> None:
    with pytest.raises(InvalidSubmission) as refused:
        validated(body, schemas.TASK_SUBMISSION, "the task")
    assert str(refused.value).startswith(message)


def test_strings_postgres_cannot_store_are_refused_after_the_schema_check() -> None:
    with pytest.raises(InvalidSubmission, match="NUL"):
        validated({"type": "noop", "args": {"s": "a\x00b"}}, schemas.TASK_SUBMISSION, "the task")
    with pytest.raises(InvalidSubmission, match="valid Unicode"):
        validated({"type": "noop", "args": {"s": "\ud800"}}, schemas.TASK_SUBMISSION, "the task")
