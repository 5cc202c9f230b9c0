"""``ledger --help`` and ``ledger --version``: every option says what it does, and the
version is the installed distribution's."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version

from execution_ledger.adapters.cli.main import build_parser
from execution_ledger.adapters.cli.parsers import REPLAY_FORMATS
from execution_ledger.adapters.dataset.formats import FORMATS


def every_parser(
    parser: argparse.ArgumentParser, path: str = "ledger"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from every_parser(child, f"{path} {name}")


def test_every_option_of_every_command_has_help_text() -> None:
    missing = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, parser in every_parser(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and not (action.help or "").strip()
    ]
    assert missing == []


def test_the_tree_is_walked_down_to_the_sub_commands_actions() -> None:
    paths = {path for path, _ in every_parser(build_parser())}
    assert {"ledger tasks", "ledger db reset", "ledger audit log", "ledger queues pause"} <= paths


def test_version_prints_the_installed_distributions_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "execution_ledger.adapters.cli.main", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"ledger {version('execution-ledger')}\n"


def test_help_and_version_do_not_load_the_runtime() -> None:
    probe = (
        "import sys; from execution_ledger.adapters.cli.main import build_parser; build_parser(); "
        "print(sorted(m for m in ('execution_ledger.adapters.runtime', 'psycopg', 'eventsourcing', 'rich') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_the_replay_formats_offered_are_the_ones_written() -> None:
    assert REPLAY_FORMATS == FORMATS
