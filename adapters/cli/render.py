"""How the CLI shows things: readable tables (rich) of tasks and events as their JSON
(``adapters/views.py``, the same shapes the HTTP API answers with) and that JSON for scripts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from execution_ledger.adapters.views import compact, pretty

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


# The one encoder of ``adapters/views.py``: the JSON the HTTP API sends, indented.
to_json = pretty
compact_json = compact


def styled_state(state: str) -> str:
    style = STATE_STYLE.get(state, "")
    return f"[{style}]{state}[/]" if style else state


def _time(value: datetime | str | None) -> str:
    """A time of a task's JSON (a datetime, or its ISO text from the service) to the second."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def task_table(rows: list[dict[str, Any]]) -> Table:
    """The task list (tasks as JSON: ``views.task_row_json`` or the service's answer)."""
    table = Table(show_lines=False, header_style="bold")
    for column in TASK_COLUMNS:  # id and state are never cut: the others give way
        whole = {"id": 36, "state": 9}.get(column)
        table.add_column(column, no_wrap=whole is not None, min_width=whole)
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["type"],
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
        str(row["id"]),
        row["type"],
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


def task_details(task: dict[str, Any]) -> Table:
    """One task (its JSON, as ``ledger show --json`` prints it), a field a line."""
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key in (
        "id",
        "type",
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
        value: Any = task.get(key)
        if key == "state":
            value = styled_state(value)
        elif key == "depends_on":
            value = ", ".join(map(str, value)) or "-"
        elif key.endswith("_at"):
            value = _time(value)
        table.add_row(key, "" if value is None else str(value))
    for key in ("args", "result", "error", "timeouts"):
        if task.get(key) is not None:
            table.add_row(key, compact_json(task[key]))
    if task.get("held_by"):
        table.add_row("held_by", task["held_by"])
    return table


def history_table(events: list[dict[str, Any]]) -> Table:
    """A task's events (each as ``views.event_json`` gives it, or the service's answer)."""
    table = Table(header_style="bold")
    for column in ("position", "version", "event", "time", "data"):
        table.add_column(column)
    for event in events:
        data = compact_json(event["data"])
        table.add_row(
            str(event["position"]),
            str(event["version"]),
            event["type"],
            _time(event["time"]),
            data if len(data) <= 120 else data[:117] + "...",
        )
    return table
