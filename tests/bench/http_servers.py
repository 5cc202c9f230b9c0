"""The HTTP servers of the write-path benchmark, each run in its own process so the load
generator never shares their interpreter:

- ``ledger``: ``ledger serve`` itself (API, worker, cron, projections in their child
  process), on the ledger named by the ``LEDGER_*`` variables; the benchmark's registry
  pauses the default queue, so only the enqueue path is loaded;
- ``api``: the ledger's HTTP API alone (``serve_http`` over ``open_runtime()``, no worker
  node and no projections), started as ``python -m tests.bench.http_servers api --port P``;
- ``ceiling``: a plain aiohttp server doing one ``INSERT … RETURNING id`` and commit per
  request through a psycopg pool of 8 connections, started as
  ``python -m tests.bench.http_servers ceiling --port P --schema S --table T``.

``running(kind, port)`` starts one, waits until it answers (or fails if the process exits
first) and stops it (SIGTERM, then SIGKILL) when the block ends.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress

from aiohttp import web
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

CEILING_POOL = 8
START_TIMEOUT = 60.0


def ceiling_table_statement(schema: str, table: str) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE {} (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), type text NOT NULL, "
        "args jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
    ).format(sql.Identifier(schema, table))


def ceiling_app(database_url: str, schema: str, table: str) -> web.Application:
    """POST /v1/tasks: one INSERT … RETURNING id + commit; GET /healthz: 200."""
    insert = sql.SQL("INSERT INTO {} (type, args) VALUES (%s, %s) RETURNING id").format(
        sql.Identifier(schema, table)
    )
    pool = AsyncConnectionPool(
        database_url, min_size=CEILING_POOL, max_size=CEILING_POOL, open=False
    )

    async def enqueue(request: web.Request) -> web.Response:
        body = await request.json()
        async with pool.connection() as conn:  # commits when the block ends
            row = await (await conn.execute(insert, (body["type"], Jsonb(body["args"])))).fetchone()
        assert row is not None
        return web.json_response({"id": str(row[0])}, status=201)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def pool_open(app: web.Application) -> AsyncIterator[None]:
        await pool.open(wait=True)
        yield
        await pool.close()

    app = web.Application()
    app.router.add_post("/v1/tasks", enqueue)
    app.router.add_get("/healthz", health)
    app.cleanup_ctx.append(pool_open)
    return app


async def serve_api(port: int) -> None:
    """The ledger's HTTP API alone, until SIGTERM."""
    from execution_ledger.adapters.http.app import serve_http
    from execution_ledger.adapters.runtime import open_runtime

    runtime = open_runtime()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await serve_http(runtime, "127.0.0.1", port, stop)
    finally:
        runtime.close()


def command(kind: str, port: int, schema: str = "", table: str = "") -> list[str]:
    if kind == "ledger":  # ``ledger serve``, as the console script runs it
        return [sys.executable, "-m", "execution_ledger.adapters.cli.main", "serve", "--port", str(port)]
    extra = ["--schema", schema, "--table", table] if kind == "ceiling" else []
    return [sys.executable, "-m", "tests.bench.http_servers", kind, "--port", str(port), *extra]


def _wait_until_answering(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before answering")
        url = f"http://127.0.0.1:{port}/healthz"
        with (
            suppress(urllib.error.URLError, ConnectionError),
            urllib.request.urlopen(url, timeout=2) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer on port {port} within {START_TIMEOUT:.0f} s")


@contextmanager
def running(
    kind: str, port: int, schema: str = "", table: str = ""
) -> Iterator[subprocess.Popen[bytes]]:
    """The server ``kind`` listening on ``127.0.0.1:port`` for the block's duration (the block
    is given its process, to read its CPU time)."""
    process = subprocess.Popen(
        command(kind, port, schema, table), env=dict(os.environ), stdout=subprocess.DEVNULL
    )
    try:
        _wait_until_answering(process, port)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("api", "ceiling"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--schema", default="")
    parser.add_argument("--table", default="")
    options = parser.parse_args()
    if options.kind == "api":
        asyncio.run(serve_api(options.port))
        return
    app = ceiling_app(os.environ["LEDGER_DATABASE_URL"], options.schema, options.table)
    web.run_app(app, host="127.0.0.1", port=options.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
