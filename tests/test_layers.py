"""One door: the ways in (the HTTP API with its console, the NATS ingress and egress, the
CLI) parse their input, call the ``Ledger`` / ``Runtime.reads`` and render through
``adapters/views.py``. Read from the source with ``ast``: a way in never imports another,
and reaches ``adapters/postgres/`` or ``projections/`` only where ``ALLOWED`` says why.

Every import counts, also one inside a function or under ``TYPE_CHECKING``. The dataset
replay (``adapters/dataset/``) is a reader behind the ways in, like ``adapters/simulation.py``:
its HTTP route is ``http/routes_dataset.py`` and its command ``cli/replay.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WAYS_IN = ("http", "nats", "cli")
BEHIND_THE_LEDGER = ("adapters.postgres", "projections")

# (module, imported module): why this way in may reach behind the Ledger.
ALLOWED = {
    ("adapters/cli/db.py", "adapters.postgres.embedded"): (
        "`ledger db status|stop|reset` runs the embedded server itself, without a runtime"
    ),
    ("adapters/cli/db.py", "adapters.postgres.grants"): (
        "`ledger db grant ROLE` writes the grants of a role: database administration, "
        "not a read or a command of the ledger"
    ),
    ("adapters/nats/connection.py", "adapters.postgres.conninfo"): (
        "`named`, how an operator finds a setting, shared with the database's settings; "
        "no SQL"
    ),
    ("adapters/http/routes_simulations.py", "adapters.postgres.event_store"): (
        "the simulation reads the log through a store wrapped so that each read restarts "
        "the request's deadline (adapters/simulation.py takes a store)"
    ),
}


def imported_modules(path: Path, root: Path) -> Iterator[str]:
    """Every module ``path`` imports, absolute, without the ``execution_ledger.`` prefix."""
    package = path.relative_to(root).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            if node.module:
                names = [".".join([*base, node.module])]
            else:  # from . import x: each x is a module
                names = [".".join([*base, alias.name]) for alias in node.names]
        else:
            continue
        for name in names:
            yield name.removeprefix("execution_ledger.")


def way_in_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) > 1 and parts[0] == "adapters" and parts[1] in WAYS_IN:
        return parts[1]
    return None


def layer_findings(root: Path) -> tuple[list[str], list[str]]:
    """(a way in importing another, a way in reaching behind the Ledger unexplained)."""
    crossings: list[str] = []
    behind: list[str] = []
    for way in WAYS_IN:
        for path in sorted((root / "adapters" / way).rglob("*.py")):
            name = path.relative_to(root).as_posix()
            for module in imported_modules(path, root):
                other = way_in_of(module)
                if other is not None and other != way:
                    crossings.append(f"{name} imports {module}")
                if module.startswith(BEHIND_THE_LEDGER) and (name, module) not in ALLOWED:
                    behind.append(f"{name} imports {module}")
    return crossings, behind


def test_no_way_in_imports_another() -> None:
    crossings, _ = layer_findings(ROOT)
    assert crossings == []


def test_the_ways_in_reach_postgres_and_projections_only_through_the_ledger() -> None:
    _, behind = layer_findings(ROOT)
    assert behind == []


def test_every_allowed_exception_is_still_needed() -> None:
    """An exception that no longer happens is taken off the list (it would hide a new one)."""
    used = {
        (path.relative_to(ROOT).as_posix(), module)
        for way in WAYS_IN
        for path in (ROOT / "adapters" / way).rglob("*.py")
        for module in imported_modules(path, ROOT)
    }
    assert sorted(set(ALLOWED) - used) == []


@pytest.mark.parametrize(
    ("source", "crossing", "behind"),
    [
        ("from execution_ledger.adapters.http.views import json_response\n", True, False),
        ("from ..http import bodies\n", True, False),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from execution_ledger.adapters.postgres.event_store import EventStore\n",
            False,
            True,
        ),
        ("def f():\n    import execution_ledger.projections.task_view\n", False, True),
        ("from execution_ledger.adapters.views import dumps\n", False, False),
        ("from . import ingress\n", False, False),
    ],
)
def test_the_check_sees_each_kind_of_import(
    tmp_path: Path, source: str, crossing: bool, behind: bool
) -> None:
    for way in WAYS_IN:
        (tmp_path / "adapters" / way).mkdir(parents=True)
    (tmp_path / "adapters" / "nats" / "probe.py").write_text(source)
    crossings, behinds = layer_findings(tmp_path)
    assert (bool(crossings), bool(behinds)) == (crossing, behind)
