"""Learn hooks: a task type's ``learn_hook`` (``module:function``) is called with each of its
finished attempts' rows of the learning dataset, in log order.

The processor follows the dataset by the rows' ``position`` and records how far it got, so a
restart resumes where it stopped and ``rerun_from`` replays the hooks from any position.
A hook that takes a second parameter receives the database cursor of the transaction that
records its position: what it writes through it commits with that position, so it sees each
attempt exactly once even across a crash. A hook that only acts outside the database may,
after a crash at the wrong moment, see a row again; the row's ``position`` lets it tell.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)

Hook = Callable[..., Any]


class DatasetFeed(Protocol):
    def next_rows(self, after: int, limit: int) -> list[dict[str, Any]]: ...

    def position(self) -> int: ...

    def deliver(
        self, rows: Sequence[dict[str, Any]], call: Callable[[dict[str, Any], Any], None]
    ) -> None:
        """Call ``call(row, cursor)`` for each row, then record the last row's position, all
        in one transaction."""

    def reset(self, position: int) -> None: ...


class LearnHooks:
    def __init__(self, hooks: Mapping[str, Hook], feed: DatasetFeed, batch: int = 200) -> None:
        self.hooks = dict(hooks)
        self.feed = feed
        self.batch = batch

    def run_once(self) -> int:
        """Deliver the next batch of finished attempts to their hooks; return how many rows."""
        rows = self.feed.next_rows(self.feed.position(), self.batch)
        if rows:
            self.feed.deliver(rows, self._call)
        return len(rows)

    def rerun_from(self, position: int) -> None:
        """Deliver again every row after ``position`` (from the next run on)."""
        self.feed.reset(position)

    def _call(self, row: dict[str, Any], cursor: Any) -> None:
        hook = self.hooks.get(row["task_type"])
        if hook is None:
            return
        result = hook(row, cursor) if _takes_cursor(hook) else hook(row)
        if inspect.isawaitable(result):  # an async hook: run it to the end here (a thread)
            asyncio.run(_awaited(result))


async def _awaited(result: Any) -> Any:
    return await result


def _takes_cursor(hook: Hook) -> bool:
    try:
        return len(inspect.signature(hook).parameters) >= 2
    except (TypeError, ValueError):
        return False
