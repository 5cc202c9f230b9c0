"""Progress reported by a command on its stdout, one line each (shell and docker tasks):

    ::progress 0.4 copied 4 of 10 files
    ::progress - still alive

The second word is the fraction done (0 to 1) or ``-`` (no fraction: a heartbeat); the rest
of the line, if any, is the message (at most 500 characters). Other lines, and malformed
progress lines, are ordinary output. The lines stay in the task's stdout. Reports are
coalesced by the worker: at most one ``TaskHeartbeat`` per attempt every few seconds, with
the latest report.
"""

from __future__ import annotations

import math

from execution_ledger.domain.execution import ProgressReport

PREFIX = b"::progress"
MAX_LINE_BYTES = 4096


class ProgressLines:
    """Splits a byte stream into lines and reports the progress lines."""

    def __init__(self, report: ProgressReport) -> None:
        self.report = report
        self.partial = bytearray()

    def feed(self, data: bytes) -> None:
        self.partial += data
        *lines, rest = self.partial.split(b"\n")
        self.partial = bytearray(rest[-MAX_LINE_BYTES:])
        for line in lines:
            if line.startswith(PREFIX):
                parsed = parse_progress_line(bytes(line))
                if parsed is not None:
                    self.report(*parsed)


def parse_progress_line(line: bytes) -> tuple[float | None, str | None] | None:
    """``(fraction, message)`` of a ``::progress`` line, or None when it is not one."""
    words = line.decode("utf-8", errors="replace").rstrip("\r").split(None, 2)
    if len(words) < 2 or words[0] != "::progress":
        return None
    message = words[2][:500] if len(words) > 2 else None
    if words[1] == "-":
        return None, message
    try:
        fraction = float(words[1])
    except ValueError:
        return None
    if not math.isfinite(fraction) or not 0.0 <= fraction <= 1.0:
        return None
    return fraction, message
