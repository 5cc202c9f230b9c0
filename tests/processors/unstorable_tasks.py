"""Python tasks whose results and errors hold text PostgreSQL cannot store (a NUL, a lone
surrogate), for tests/processors/test_unstorable_outcomes.py."""

from __future__ import annotations

from typing import Any


def nul_result(args: dict[str, Any]) -> dict[str, Any]:
    return {"text": "a\x00b", "key\x00": [1, "\x00"]}


def surrogate_result(args: dict[str, Any]) -> str:
    return "a\ud800b"


def raises_unstorable(args: dict[str, Any]) -> None:
    raise ValueError("bad\x00input \udc80 here")
