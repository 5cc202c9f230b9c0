"""The task filter's options, one set for ``ledger tasks`` and ``ledger bulk``, and the
filter they make (checked by ``adapters/task_filters.py``). Imports nothing heavy at the top:
``ledger --help`` builds these options without loading the runtime."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from execution_ledger.adapters.ledger_reads import TaskFilter
    from execution_ledger.domain.registry import Registry


def add_task_filter_options(command: argparse.ArgumentParser) -> None:
    add = command.add_argument
    add("--state", help="only tasks in this state (blocked, ready, running, failed, ...)")
    add("--type", dest="type_name", help="only tasks of this type")
    add("--queue", help="only tasks of this queue")
    add("--lane", help="only tasks of this lane")
    add("--tag", help="only tasks with this tag")
    add("--since", metavar="TIME", help="only tasks enqueued at or after this ISO 8601 time")
    add("--until", metavar="TIME", help="only tasks enqueued before this ISO 8601 time")
    add("--text", help="only tasks whose args or error contain this text (any case)")


def task_filter_of(registry: Registry, options: argparse.Namespace) -> TaskFilter:
    """The filter the options give (``InvalidQuery`` naming a bad one: exit status 2)."""
    from execution_ledger.adapters.task_filters import task_filter

    return task_filter(
        registry,
        state=options.state,
        type_name=options.type_name,
        queue=options.queue,
        lane=options.lane,
        tag=options.tag,
        since=options.since,
        until=options.until,
        text=options.text,
        prefix="--",
    )
