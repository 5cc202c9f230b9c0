"""``ledger signal ID NAME [--data JSON]``: deliver a named signal (an approval, an input)
to a task that waits for it, as the local admin (the HTTP API and the NATS subject check
the caller's role; see docs/patterns.md, "Signals and approval steps")."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from execution_ledger.adapters.cli.task_ids import resolve_task_id, task_ref
from execution_ledger.domain.errors import InvalidSubmission

if TYPE_CHECKING:  # the runtime and the renderer load only when the command runs
    from execution_ledger.adapters.runtime import Runtime


def add_signal_parser(commands: Any) -> argparse.ArgumentParser:
    command: argparse.ArgumentParser = commands.add_parser(
        "signal", help="deliver a named signal (e.g. an approval) to a task waiting for it"
    )
    command.add_argument("task_id", type=task_ref, help="task id, or a unique prefix")
    command.add_argument("name", help="the signal's name, e.g. approval")
    command.add_argument("--data", help="JSON the task will see with the signal")
    return command


def signal_data(text: str | None) -> Any:
    """``--data``: the JSON a task sees with the signal (None when not given)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidSubmission(f"--data is not valid JSON: {error}") from None


def cmd_signal(rt: Runtime, options: argparse.Namespace) -> None:
    from execution_ledger.adapters.cli import render

    task_id = resolve_task_id(rt.reads, options.task_id)
    task = rt.ledger.signal(task_id, options.name, signal_data(options.data))
    waiting = ", ".join(task.awaited_signals)
    render.console.print(
        f"{task.id}  {task.state.value}" + (f"  (still waits for: {waiting})" if waiting else "")
    )
