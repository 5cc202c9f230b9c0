"""What changed between two registry documents: keys added, removed and changed, by path.

Tables are compared key by key, down to the leaves; an array (roles, tags, a schedule's
argv) is one value, changed as a whole. A path is the list of keys from the top
(``["task_types", "echo", "schema"]``), so a key holding a dot stays one key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ADDED = "added"
REMOVED = "removed"
CHANGED = "changed"


def diff_documents(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every difference, in key order: ``{"op", "path", "old"?, "new"?}`` (an added key
    has no ``old``, a removed one no ``new``)."""
    changes: list[dict[str, Any]] = []
    _compare(old, new, [], changes)
    return changes


def _compare(
    old: Mapping[str, Any], new: Mapping[str, Any], path: list[str], out: list[dict[str, Any]]
) -> None:
    for key in sorted(set(old) | set(new)):
        where = [*path, key]
        if key not in new:
            out.append({"op": REMOVED, "path": where, "old": old[key]})
        elif key not in old:
            out.append({"op": ADDED, "path": where, "new": new[key]})
        elif isinstance(old[key], Mapping) and isinstance(new[key], Mapping):
            _compare(old[key], new[key], where, out)
        elif old[key] != new[key]:
            out.append({"op": CHANGED, "path": where, "old": old[key], "new": new[key]})


def path_text(path: Sequence[str]) -> str:
    """A path for people: ``task_types.echo.schema`` (a key with a dot is quoted)."""
    return ".".join(f'"{key}"' if "." in key or not key else key for key in path)


def diff_summary(diff: Sequence[Mapping[str, Any]], shown: int = 10) -> dict[str, Any]:
    """Counts per kind of change and the first ``shown`` changes as ``+ path`` / ``- path``
    / ``~ path`` lines."""
    marks = {ADDED: "+", REMOVED: "-", CHANGED: "~"}
    counts = {kind: sum(1 for c in diff if c["op"] == kind) for kind in (ADDED, REMOVED, CHANGED)}
    lines = [f"{marks[c['op']]} {path_text(c['path'])}" for c in diff[:shown]]
    if len(diff) > shown:
        lines.append(f"... and {len(diff) - shown} more")
    return {**counts, "changes": lines}
