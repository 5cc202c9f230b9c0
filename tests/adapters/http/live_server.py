"""A real HTTP server on 127.0.0.1 (any free port) over a real runtime, run in a thread with
its own event loop, optionally with a worker node in that loop; and the principals of the
secured configuration used by the tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from execution_ledger.adapters.config_file import DEFAULT_REGISTRY
from execution_ledger.adapters.http.app import serve_http
from execution_ledger.adapters.http.auth import token_sha256
from execution_ledger.adapters.http.limits import HttpLimits
from execution_ledger.adapters.node import WorkerNode
from execution_ledger.adapters.runtime import Runtime, open_runtime

TOKENS = {
    "admin": "admin-token-0123",
    "coder": "coder-token-4567",
    "critic": "critic-token-89ab",
}
SECURED_CONFIG = """
[roles.coder]
task_types = ["echo", "add", "sleep"]

[roles.critic]
task_types = ["echo"]
may_cancel = false

[[principals]]
name = "alice"
role = "admin"
token_sha256 = "{admin}"

[[principals]]
name = "carol"
role = "coder"
token_sha256 = "{coder}"

[[principals]]
name = "cris"
role = "critic"
token_sha256 = "{critic}"
"""


class LiveServer:
    """``serve_http`` (and optionally a ``WorkerNode``) in a background event loop."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        host: str = "127.0.0.1",
        limits: HttpLimits | None = None,
        worker: bool = False,
    ) -> None:
        self.runtime = runtime
        self.host = host
        self.limits = limits
        self.worker = worker
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="http-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the HTTP server did not start within 30 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def client(self, token: str | None = None, **options: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        options.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, headers=headers, **options)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # surfaced by __enter__
            self._error = error
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        jobs = [
            serve_http(
                self.runtime,
                self.host,
                0,
                self._stop,
                limits=self.limits,
                on_listening=self._listening,
            )
        ]
        if self.worker:
            jobs.append(WorkerNode(self.runtime, watchdog_interval=0.2).run(self._stop))
        await asyncio.gather(*jobs)

    def _listening(self, addresses: list[tuple[str, int]]) -> None:
        self.port = addresses[0][1]
        self._ready.set()


def secured_config(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.toml"
    hashes = {role: token_sha256(token) for role, token in TOKENS.items()}
    path.write_text(DEFAULT_REGISTRY.read_text() + SECURED_CONFIG.format(**hashes))
    return path


@contextmanager
def runtime_with_file(tmp_path: Path, text: str) -> Iterator[Runtime]:
    """A runtime opened on a configuration file holding ``text`` (closed afterwards)."""
    config = tmp_path / "ledger.toml"
    config.write_text(text)
    runtime = open_runtime(config, pool_size=2)
    try:
        yield runtime
    finally:
        runtime.close()
