"""The processes the CLI starts freeze their start-up heap before they serve
(``adapters/startup_heap.py``): checked in a child process, as ``ledger worker`` runs."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import asyncio, gc
from execution_ledger.adapters.cli.services import run_until_signalled

async def main(stop: asyncio.Event) -> None:
    print(gc.get_freeze_count() > 1000)

print(gc.get_freeze_count())
run_until_signalled(main)
"""


def test_a_served_process_runs_with_its_start_up_heap_frozen() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "True"]
