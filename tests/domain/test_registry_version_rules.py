"""The pure rules of registry versions: the recorded document (no token hashes, no node
tables, one digest for one registry however it is written), the diff by path, and the
refusals of changes that would break live work."""

from __future__ import annotations

import tomllib
from uuid import uuid4

import pytest

from execution_ledger.domain.errors import InvalidTransition
from execution_ledger.domain.registry import build_registry
from execution_ledger.domain.registry_change import LiveWork, breaking_changes, types_to_check
from execution_ledger.domain.registry_diff import diff_documents, diff_summary, path_text
from execution_ledger.domain.registry_document import document_digest, registry_document
from execution_ledger.domain.registry_history import RegistryHistory

HASH = "a" * 64
FILE = f"""
[ledger]
database_url = "postgresql://u:secret@db/ledger"

[http]
max_wait = "30s"

[queues.fast]
concurrency = 4

[task_types.echo]
adapter = "shell"
queue = "fast"
settings = {{ argv = ["echo", "hi"] }}
schema = {{ type = "object", properties = {{ n = {{ type = "integer" }} }} }}

[[principals]]
name = "alice"
role = "admin"
token_sha256 = "{HASH}"
"""


def test_the_document_keeps_the_registry_and_names_principals_without_their_token_hashes() -> None:
    document = registry_document(tomllib.loads(FILE))
    assert set(document) == {"queues", "task_types", "principals"}
    assert document["principals"] == [{"name": "alice", "role": "admin"}]
    assert HASH not in str(document) and "secret" not in str(document)


def test_one_registry_written_two_ways_has_one_digest_and_another_registry_another() -> None:
    reordered = FILE.replace("[queues.fast]\nconcurrency = 4\n", "") + (
        "\n[queues.fast]\n# the same queue, written last\nconcurrency = 4\n"
    )
    first = registry_document(tomllib.loads(FILE))
    assert document_digest(registry_document(tomllib.loads(reordered))) == document_digest(first)
    changed = registry_document(tomllib.loads(FILE.replace("concurrency = 4", "concurrency = 5")))
    assert document_digest(changed) != document_digest(first)
    assert document_digest(first).startswith("sha256:")


def test_the_diff_names_added_removed_and_changed_keys_by_path() -> None:
    old = {"queues": {"fast": {"concurrency": 4}, "slow": {}}, "lanes": {"a.b": {"limit": 1}}}
    new = {"queues": {"fast": {"concurrency": 8}}, "lanes": {"a.b": {"limit": 1}}, "roles": {}}
    diff = diff_documents(old, new)
    assert diff == [
        {"op": "changed", "path": ["queues", "fast", "concurrency"], "old": 4, "new": 8},
        {"op": "removed", "path": ["queues", "slow"], "old": {}},
        {"op": "added", "path": ["roles"], "new": {}},
    ]
    assert diff_documents(new, new) == []
    assert path_text(["lanes", "a.b", "limit"]) == 'lanes."a.b".limit'
    summary = diff_summary(diff)
    assert (summary["added"], summary["removed"], summary["changed"]) == (1, 1, 1)
    assert summary["changes"][0] == "~ queues.fast.concurrency"


def test_the_history_numbers_versions_and_refuses_the_current_registry_again() -> None:
    history = RegistryHistory.start()
    first = {"queues": {"a": {}}}
    assert history.change(first, document_digest(first), "alice", "a.toml") == 1
    second = {"queues": {"a": {}, "b": {}}}
    assert history.change(second, document_digest(second), "bob", "b.toml", forced=True) == 2
    changed = history.pending_events[-1]
    assert changed.diff == [{"op": "added", "path": ["queues", "b"], "new": {}}]  # type: ignore[attr-defined]
    assert changed.forced is True and changed.by == "bob"  # type: ignore[attr-defined]
    with pytest.raises(InvalidTransition, match="already version 2"):
        history.change(second, document_digest(second), "carol", "b.toml")


def _registry(text: str):
    return build_registry(tomllib.loads(text))


OLD = """
[queues.fast]
[queues.slow]
[task_types.echo]
adapter = "shell"
queue = "fast"
schema = { type = "object" }
[task_types.add]
adapter = "shell"
queue = "slow"
"""


def test_removing_a_type_or_queue_with_live_tasks_is_refused_with_the_counts() -> None:
    old = _registry(OLD)
    new = _registry('[queues.fast]\n[task_types.echo]\nadapter = "shell"\nqueue = "fast"\n')
    live = LiveWork(by_type={"echo": 1, "add": 3}, by_queue={"fast": 1, "slow": 3})
    assert breaking_changes(old, new, live) == [
        "task type 'add' is removed but 3 of its tasks are live",
        "queue 'slow' is removed but holds 3 live tasks",
    ]
    assert breaking_changes(old, new, LiveWork(by_type={"echo": 2}, by_queue={"fast": 2})) == []


def test_a_schema_that_live_args_no_longer_satisfy_is_refused_naming_the_tasks() -> None:
    old = _registry(OLD)
    stricter = _registry(
        OLD.replace(
            'schema = { type = "object" }', 'schema = { type = "object", required = ["n"] }'
        )
    )
    assert types_to_check(old, stricter, {"echo": 2, "add": 1}) == ["echo"]
    assert types_to_check(old, old, {"echo": 2}) == []  # unchanged schema: not read at all
    fits, misfit = uuid4(), uuid4()
    live = LiveWork(
        by_type={"echo": 2}, by_queue={"fast": 2}, args={"echo": [(fits, {"n": 1}), (misfit, {})]}
    )
    (reason,) = breaking_changes(old, stricter, live)
    assert "task type 'echo'" in reason and "1 live tasks" in reason
    assert (
        str(misfit) in reason and str(fits) not in reason and "'n' is a required property" in reason
    )


def test_without_a_registry_to_compare_with_every_schema_of_live_types_is_checked() -> None:
    new = _registry(OLD)
    assert types_to_check(None, new, {"echo": 1, "add": 1}) == ["echo"]  # add has no schema
