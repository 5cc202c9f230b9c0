"""Task requests from JSON objects: one rule for a submitted graph and for spawned children."""

from __future__ import annotations

from typing import Any

import pytest

from execution_ledger.domain.errors import InvalidSubmission
from execution_ledger.domain.graph_json import graph_requests, task_requests


def test_a_graph_becomes_requests_with_every_field_it_names() -> None:
    requests = graph_requests(
        {
            "tasks": [
                {"ref": "a", "type": "echo", "args": {"x": 1}, "tags": ["t"]},
                {"ref": "b", "type": "echo", "depends_on": ["a"], "queue": "q", "priority": 5},
            ]
        }
    )

    assert [(r.ref, r.type_name, r.depends_on, r.tags) for r in requests] == [
        ("a", "echo", (), ("t",)),
        ("b", "echo", ("a",), ()),
    ]
    assert (requests[0].args, requests[1].queue, requests[1].priority) == ({"x": 1}, "q", 5)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"args": {}}], 'children[0] must be an object with a "type"'),
        (["echo"], 'children[0] must be an object with a "type"'),
        ([{"type": "echo"}, {"type": "echo", "when": 1}], "children[1]: unknown field 'when'"),
        ([{"type": "echo", "depends_on": "a"}], "children[0].depends_on must be an array of"),
        ([{"type": "echo", "tags": [1]}], "children[0].tags must be an array of strings"),
    ],
)
def test_a_malformed_object_is_refused_naming_its_place(items: list[Any], message: str) -> None:
    with pytest.raises(InvalidSubmission, match=message.replace("[", r"\[").replace("]", r"\]")):
        task_requests(items, "children")


@pytest.mark.parametrize("data", [[], {"tasks": {}}, {"task": []}, None])
def test_a_graph_without_a_tasks_array_is_refused(data: Any) -> None:
    with pytest.raises(InvalidSubmission, match='a graph is an object with a "tasks" array'):
        graph_requests(data)
