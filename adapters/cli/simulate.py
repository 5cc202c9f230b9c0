"""``ledger simulate --registry NEW.toml``: what a window of the log would have looked like
under another registry (``adapters/simulation.py``); the report beside what happened, as
text or canonical JSON. Reads the log only."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from execution_ledger.adapters.runtime import Runtime

HELP = "replay a window of the log through another registry, on a simulated clock"
EPILOG = """examples:
  ledger simulate --registry new.toml --since 24h
  ledger simulate --registry new.toml --since 2026-12-01T00:00Z --until 2026-12-02T00:00Z \\
      --workers 3 --concurrency 20 --json --out report.json
  ledger simulate --registry ledger.toml --since 1h     # the current registry: how faithful?
"""


def add_simulate_parser(commands: Any) -> argparse.ArgumentParser:
    command: argparse.ArgumentParser = commands.add_parser(
        "simulate",
        help=HELP,
        description=HELP + ". Nothing is written to the log.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = command.add_argument
    add("--registry", type=Path, required=True, help="the registry file (TOML) to try")
    add("--since", metavar="TIME", help="window start: ISO 8601 time with zone, or e.g. 24h")
    add(
        "--until",
        metavar="TIME|POSITION",
        help="window end: a time (or duration ago), or a log position (default: now)",
    )
    add("--workers", type=int, default=1, help="worker nodes simulated (default: 1)")
    add("--concurrency", type=int, default=10, help="attempts each runs at once (default: 10)")
    add("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    add("--json", action="store_true", help="print the report as canonical JSON")
    add("--out", type=Path, help="write the report here instead of printing it")
    return command


def cmd_simulate(rt: Runtime, options: argparse.Namespace) -> None:
    from execution_ledger.adapters.config_file import load_config
    from execution_ledger.adapters.simulation import (
        SimulationRequest,
        check_settings,
        simulate,
        text_sha256,
    )
    from execution_ledger.domain.errors import InvalidQuery
    from execution_ledger.domain.moments import parse_moment

    try:
        text = options.registry.read_text()
    except OSError as error:
        raise InvalidQuery(f"--registry {options.registry}: {error.strerror}") from None
    config = load_config(options.registry)
    now = datetime.now(UTC)
    until_position, until = _until(options.until, now)
    request = SimulationRequest(
        registry=config.registry,
        registry_text_sha256=text_sha256(text),
        registry_source=str(options.registry),
        since=parse_moment(options.since, "--since", now),
        until=until,
        until_position=until_position,
        settings=check_settings(options.workers, options.concurrency, options.seed),
    )
    report = simulate(rt.store, request, baseline=rt.registry)
    output = report.as_json() if options.json else report.text()
    if options.out is not None:
        options.out.write_text(output + "\n")
        print(f"wrote {options.out} (report sha256 {report.digest})")
    else:
        print(output)


def _until(text: str | None, now: datetime) -> tuple[int | None, datetime | None]:
    """``--until``: a log position, or a time."""
    from execution_ledger.domain.moments import parse_moment

    if text is not None and text.isdigit():
        return int(text), None
    return None, parse_moment(text, "--until", now)
