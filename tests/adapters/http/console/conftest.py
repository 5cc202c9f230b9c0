"""Fixtures of the console's browser tests: the module's Chromium and a seeded ledger."""

from __future__ import annotations

from tests.adapters.http.console.browser import chromium

__all__ = ["chromium"]
