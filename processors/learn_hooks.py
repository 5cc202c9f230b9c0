"""Learn hooks: a task type's ``learn_hook`` (``module:function``) is called with each of its
finished attempts' rows of the learning dataset, in log order.

Each hook follows its own feed (the rows of its task type) and records how far it got, so a
restart resumes where it stopped, ``rerun_from`` replays the hooks from any position, and a
hook that fails holds back only its own rows: the others go on, and its rows are delivered
again next round. A hook that takes a second parameter receives the database cursor of the
transaction that records its position: what it writes through it commits with that
position, so it sees each attempt exactly once even across a crash. A hook that only acts
outside the database may, after a crash at the wrong moment, see a row again; the row's
``position`` lets it tell.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

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


class LearnHookFailed(RuntimeError):
    """One or more hooks raised; their rows are delivered again next round."""


class LearnHooks:
    def __init__(
        self, hooks: Mapping[str, Hook], feed_of: Callable[[str], DatasetFeed], batch: int = 200
    ) -> None:
        self.hooks = dict(hooks)
        self.feeds = {task_type: feed_of(task_type) for task_type in self.hooks}
        self.batch = batch

    def run_once(self) -> int:
        """Deliver the next batch of each hook's finished attempts; return how many rows.

        Raises ``LearnHookFailed`` after every hook had its turn if any of them raised
        (naming them; the first error is its cause)."""
        delivered = 0
        failed: dict[str, Exception] = {}
        for task_type, hook in self.hooks.items():
            try:
                delivered += self._deliver(self.feeds[task_type], hook)
            except Exception as error:  # one hook's failure must not hold back the others
                failed[task_type] = error
        if failed:
            first = next(iter(failed.values()))
            names = ", ".join(sorted(failed))
            raise LearnHookFailed(f"learn hook of {names} failed: {first!r}") from first
        return delivered

    def rerun_from(self, position: int) -> None:
        """Deliver again every row after ``position``, to every hook (from the next run)."""
        for feed in self.feeds.values():
            feed.reset(position)

    def _deliver(self, feed: DatasetFeed, hook: Hook) -> int:
        rows = feed.next_rows(feed.position(), self.batch)
        if rows:
            feed.deliver(rows, lambda row, cursor: _call(hook, row, cursor))
        return len(rows)


def _call(hook: Hook, row: dict[str, Any], cursor: Any) -> None:
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
