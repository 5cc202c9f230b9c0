"""Server-sent events, as ``GET /v1/events/stream`` sends them: frames of ``id:``,
``event:`` and ``data:`` lines ended by a blank line; comments (``: keepalive``) and
``retry:`` are skipped; an ``error`` frame (the service lost its database) is raised as
``ServiceError``. Fed one line at a time (by the sync or the async client)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from execution_ledger.adapters.client.errors import ServiceError
from execution_ledger.adapters.client.models import EventView


@dataclass
class FrameReader:
    """Collects lines; ``line`` returns an event when a frame ends with one."""

    _data: list[str] = field(default_factory=list)
    _event: str = ""
    last_id: str | None = None  # the last frame's id: a reconnection's ``Last-Event-ID``

    def line(self, text: str) -> EventView | None:
        text = text.rstrip("\r\n")
        if not text:
            return self._end()
        if text.startswith(":"):
            return None
        name, _, value = text.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "id":
            self.last_id = value
        elif name == "event":
            self._event = value
        return None

    def _end(self) -> EventView | None:
        data, event = "\n".join(self._data), self._event
        self._data, self._event = [], ""
        if event == "error":  # the service's last frame before it closes the stream
            raise ServiceError(f"the event stream stopped: {data}", status=200)
        if not data:
            return None
        return EventView.from_json(json.loads(data))
