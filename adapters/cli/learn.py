"""``ledger learn``: where each learn hook stands, and re-running hooks from a position.

ledger learn status                      each hook, its delivery position, the dataset's
ledger learn rerun POSITION [--type T]   deliver again every row after POSITION (to every
                                         hook, or to T's), from the nodes' next round
"""

from __future__ import annotations

import argparse

from execution_ledger.adapters.cli import render
from execution_ledger.adapters.cli.parsers import (
    add_learn_parser as add_learn_parser,  # re-exported
)
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import InvalidSubmission


def cmd_learn(rt: Runtime, options: argparse.Namespace) -> int:
    hooks = hooked_types(rt)
    if options.action == "status":
        dataset = rt.runners["dataset"].position()
        for task_type in hooks:
            position = rt.learn_feed(task_type).position()
            render.console.print(
                f"{task_type:<20} position {position:>10}  dataset at {dataset:>10}"
            )
        return 0
    if options.position < 0:
        raise InvalidSubmission("the position must be 0 or more")
    chosen = hooks if options.task_type is None else [_hooked(options.task_type, hooks)]
    for task_type in chosen:
        rt.learn_feed(task_type).reset(options.position)
    render.console.print(
        f"{', '.join(chosen)}: rows after position {options.position} are delivered again"
    )
    return 0


def hooked_types(rt: Runtime) -> list[str]:
    """The task types with a ``learn_hook``, by name; refused when there are none."""
    types = sorted(
        task_type.name
        for task_type in rt.registry.task_types.values()
        if task_type.learn_hook is not None
    )
    if not types:
        raise InvalidSubmission("no task type has a learn_hook in this registry")
    return types


def _hooked(task_type: str, hooks: list[str]) -> str:
    if task_type not in hooks:
        raise InvalidSubmission(
            f"task type {task_type!r} has no learn_hook (hooks: {', '.join(hooks)})"
        )
    return task_type
