"""The checks CI runs between the install and the tests (``.ci/run``): ruff, then mypy with
pyproject's ``[tool.mypy]``, strict on ``domain/`` and ``processors/`` and looser (bodies of
untyped functions still checked) on ``adapters/`` and ``projections/``; ``tests/`` is not
type-checked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("domain", "processors", "adapters", "projections")


def mypy(cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """A bare ``mypy`` in ``cwd``, as ``.ci/run`` calls it (the files come from its config)."""
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache), "--no-error-summary"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_packages_type_check(tmp_path: Path) -> None:
    result = mypy(ROOT, tmp_path / "cache")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_core_is_strict_and_the_adapters_are_checked_inside_untyped_functions(
    tmp_path: Path,
) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    probe = "def untyped(x):\n    wrong: str = 1\n    return x\n"
    (tmp_path / "execution_ledger").mkdir()
    (tmp_path / "execution_ledger" / "__init__.py").write_text("")
    for package in PACKAGES:
        (tmp_path / "execution_ledger" / package).mkdir()
        (tmp_path / "execution_ledger" / package / "__init__.py").write_text("")
        (tmp_path / "execution_ledger" / package / "probe.py").write_text(probe)
    result = mypy(tmp_path, tmp_path / "cache")
    assert result.returncode == 1
    assert error_codes(result.stdout) == {
        ("execution_ledger/domain/probe.py:1", "no-untyped-def"),
        ("execution_ledger/domain/probe.py:2", "assignment"),
        ("execution_ledger/processors/probe.py:1", "no-untyped-def"),
        ("execution_ledger/processors/probe.py:2", "assignment"),
        ("execution_ledger/adapters/probe.py:2", "assignment"),
        ("execution_ledger/projections/probe.py:2", "assignment"),
    }


def error_codes(output: str) -> set[tuple[str, str]]:
    """``(file:line, code)`` of each error mypy printed."""
    found = set()
    for line in output.splitlines():
        where, _, message = line.partition(": error: ")
        if message:
            found.add((where, message.rsplit("[", 1)[-1].rstrip("]")))
    return found


def test_ci_runs_ruff_and_mypy_after_the_install_and_before_the_tests() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    lines = [line.strip() for line in script.splitlines() if line.strip()]
    steps = [
        "python3 -m venv .venv",
        ".venv/bin/pip install -q -e '.[test]'",
        ".venv/bin/ruff check .",
        ".venv/bin/mypy",
        ".venv/bin/python -m pytest",
    ]
    assert "set -euo pipefail" in lines  # a failing step fails the script
    assert [lines.index(step) for step in steps] == sorted(lines.index(s) for s in steps)
    assert lines[-1] == ".venv/bin/python -m pytest"
