"""Learn hooks used by the tests (importable as ``tests.processors.learn_hook_fixtures:...``)."""

from __future__ import annotations

from typing import Any

from psycopg import sql

SEEN: list[dict[str, Any]] = []
FAIL_ONCE: list[bool] = []
TABLE: list[sql.Identifier] = []  # where count_in_database writes (set by the test)


def remember(row: dict[str, Any]) -> None:
    if FAIL_ONCE:
        FAIL_ONCE.pop()
        raise RuntimeError("the hook failed once")
    SEEN.append(row)


def count_in_database(row: dict[str, Any], cursor: Any) -> None:
    """Writes through the feed's own transaction: exactly once with the position."""
    cursor.execute(
        sql.SQL("INSERT INTO {} (position, outcome) VALUES (%s, %s)").format(TABLE[0]),
        (row["position"], row["outcome"]),
    )


async def remember_async(row: dict[str, Any]) -> None:
    SEEN.append(row)
