"""An HTTP answer in JSON: ``json_response`` writes a body through the one encoder of
``adapters/views.py`` (where the JSON of a task, an event, a page and a task type is made)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from execution_ledger.adapters.views import dumps


def json_response(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, text=dumps(value), content_type="application/json", headers=headers
    )
