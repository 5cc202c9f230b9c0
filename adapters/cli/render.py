"""How the CLI shows things: readable tables (rich) and JSON for scripts."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.table import Table

from execution_ledger.adapters.postgres.event_store import RecordedEvent
from execution_ledger.domain.task import event_name

console = Console()
STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "skipped": "yellow",
    "running": "cyan",
    "ready": "bold",
    "scheduled": "blue",
    "blocked": "dim",
}


def to_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, indent=2, sort_keys=True)


def compact_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, sort_keys=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, (UUID,)):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def styled_state(state: str) -> str:
    style = STATE_STYLE.get(state, "")
    return f"[{style}]{state}[/]" if style else state


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def task_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(show_lines=False, header_style="bold")
    for column in TASK_COLUMNS:  # id and state are never cut: the others give way
        whole = {"id": 36, "state": 9}.get(column)
        table.add_column(column, no_wrap=whole is not None, min_width=whole)
    for row in rows:
        table.add_row(
            str(row["task_id"]),
            row["type_name"],
            row["queue"],
            styled_state(row["state"]),
            f"{row['attempts']}/{row['max_attempts']}",
            row["lane"] or "",
            _time(row["enqueued_at"]),
        )
    return table


TASK_COLUMNS = ("id", "type", "queue", "state", "attempts", "lane", "enqueued")


def _task_cells(row: dict[str, Any]) -> list[str]:
    return [
        str(row["task_id"]),
        row["type_name"],
        row["queue"],
        row["state"],
        f"{row['attempts']}/{row['max_attempts']}",
        row["lane"] or "-",
        _time(row["enqueued_at"]),
    ]


def task_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The task list as plain aligned text, nothing cut (for pipes and ``--wide``)."""
    cells = [list(TASK_COLUMNS), *(_task_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(TASK_COLUMNS))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in cells]


def task_details(row: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key in (
        "task_id",
        "type_name",
        "adapter",
        "state",
        "queue",
        "priority",
        "lane",
        "principal",
        "role",
        "attempts",
        "max_attempts",
        "worker",
        "timeout_kind",
        "depends_on",
        "run_at",
        "enqueued_at",
        "started_at",
        "finished_at",
    ):
        value = row[key]
        if key == "state":
            value = styled_state(value)
        elif key == "depends_on":
            value = ", ".join(map(str, value)) or "-"
        elif isinstance(value, datetime):
            value = _time(value)
        table.add_row(key, "" if value is None else str(value))
    for key in ("args", "result", "error", "timeouts"):
        if row[key] is not None:
            table.add_row(key, json.dumps(row[key], sort_keys=True))
    if row.get("held_by"):
        table.add_row("held_by", row["held_by"])
    return table


def event_data(recorded: RecordedEvent) -> dict[str, Any]:
    skip = {"originator_id", "originator_version", "timestamp", "originator_topic"}
    return {k: v for k, v in vars(recorded.event).items() if k not in skip}


def history_table(events: list[RecordedEvent]) -> Table:
    table = Table(header_style="bold")
    for column in ("position", "version", "event", "time", "data"):
        table.add_column(column)
    for recorded in events:
        event = recorded.event
        data = compact_json(event_data(recorded))
        table.add_row(
            str(recorded.position),
            str(event.originator_version),
            event_name(type(event)),
            _time(event.timestamp),
            data if len(data) <= 120 else data[:117] + "...",
        )
    return table
