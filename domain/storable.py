"""Values PostgreSQL can store: text with no NUL character (``text`` and ``jsonb`` refuse it)
and no lone surrogate (UTF-8 cannot encode one, so neither can the event log); numbers that
are finite (``jsonb`` has no NaN or infinity).

A submission holding one of these is refused (``submission.py``); what a task's code or
output gives back (results, error messages, details, progress messages) is made storable
instead (``storable``): each NUL and each lone surrogate becomes U+FFFD, the replacement
character, as the executors already do for bytes that are not UTF-8, and a NaN or an
infinity (which a lenient JSON reader takes from an HTTP or NATS reply) becomes the text
``"NaN"``, ``"Infinity"`` or ``"-Infinity"``. An attempt's outcome that could not be
stored would otherwise stop its worker from recording any outcome, and a task view reading
it would stop for every task.
"""

from __future__ import annotations

import math
import re
from typing import Any

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def is_storable(text: str) -> bool:
    """True when ``text`` holds neither a NUL (nor its JSON escape) nor a lone surrogate."""
    if "\x00" in text or "\\u0000" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_text(text: str) -> str:
    """``text`` with each NUL and lone surrogate replaced by U+FFFD (``text`` itself when
    there is none)."""
    if "\x00" not in text:
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            pass
    return _UNSTORABLE.sub(REPLACEMENT, text)


def storable(value: Any) -> Any:
    """A JSON-like ``value`` whose strings (dictionary keys too) are all ``storable_text`` and
    whose numbers are finite; ``value`` itself, not a copy, when they already are."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        pairs = [(storable(k), storable(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(pairs, value.items(), strict=True)):
            return value
        return dict(pairs)
    if isinstance(value, list | tuple):
        items = [storable(item) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        if isinstance(value, list):
            return items
        return tuple(items) if type(value) is tuple else type(value)(*items)  # a named tuple
    return value
