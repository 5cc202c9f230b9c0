"""The ``ledger`` commands that run until stopped (``serve``, ``worker``, ``projections
run``) and the projection rebuild that coordinates with them.

SIGINT (Ctrl-C) and SIGTERM stop them: with no attempt running a node is gone within a
second or so; running attempts get the worker's grace period (``docs/worker.md``,
"Graceful shutdown"). A busy port is refused in one line before anything starts.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from functools import partial

from execution_ledger.adapters.cli import render
from execution_ledger.adapters.cli.commands import worker_node
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.adapters.startup_heap import freeze_startup_heap
from execution_ledger.adapters.telemetry.context import start_telemetry
from execution_ledger.domain.errors import ConfigError, InvalidSubmission


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on (as the server will bind it:
    ``SO_REUSEADDR``, so a port in TIME_WAIT is not refused)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ConfigError(f"cannot listen on {host!r}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise _bind_error(host, port, error) from None


def _bind_error(host: str, port: int, error: OSError) -> ConfigError:
    if error.errno == errno.EADDRINUSE:
        return ConfigError(
            f"port {port} on {host} is in use (another ledger serve?); stop that process "
            "or choose another --port"
        )
    return ConfigError(f"cannot listen on {host}:{port}: {error.strerror}")


def cmd_serve(rt: Runtime, options: argparse.Namespace) -> None:
    from execution_ledger.adapters import service

    service.check_listen_address(rt, options.host)  # refuse before starting anything
    check_port_free(options.host, options.port)
    start_telemetry(rt.settings.config)  # traces, when configured: before the node is built
    node = worker_node(rt, options)
    nats = service.find_or_start_nats(rt) if options.nats else None
    suffix = f"; NATS {nats.connection.shown}" if nats is not None else ""

    def listening(addresses: list[tuple[str, int]]) -> None:
        render.console.print(
            f"serving http://{options.host}:{addresses[0][1]}/v1 (OpenAPI at /openapi.json); "
            f"worker {node.worker_id} on queues {', '.join(node.queues)}{suffix}"
        )

    async def main(stop: asyncio.Event) -> None:
        await service.serve(
            rt,
            node,
            options.host,
            options.port,
            stop,
            nats=nats.connection if nats is not None else None,
            on_listening=listening,
        )

    try:
        run_until_signalled(main)
    except OSError as error:  # the port was taken between the check and the bind
        raise _bind_error(options.host, options.port, error) from None
    finally:
        if nats is not None:
            nats.stop()


def cmd_worker(rt: Runtime, options: argparse.Namespace) -> None:
    start_telemetry(rt.settings.config)
    node = worker_node(rt, options)
    render.console.print(f"worker {node.worker_id} on queues {', '.join(node.queues)}")
    run_until_signalled(node.run)


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` until SIGINT or SIGTERM sets ``stop``; the heap built so far is
    frozen first (``startup_heap.py``)."""
    freeze_startup_heap()

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await main(stop)

    asyncio.run(runner())


def run_projections_until_signalled(
    rt: Runtime, nice: int = 0, parent_pid: int | None = None
) -> None:
    from execution_ledger.adapters.node import start_projections, stop_when_orphaned

    if nice:
        os.nice(nice)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    freeze_startup_heap()
    threads = start_projections(rt, stop)
    if parent_pid is not None:
        threads.append(stop_when_orphaned(stop, parent_pid))
    render.console.print(f"following the log with {', '.join(rt.runners)}")
    stop.wait()
    for thread in threads:
        thread.join(timeout=10)


def cmd_projections(rt: Runtime, options: argparse.Namespace) -> None:
    if options.action == "run":
        if options.nice < 0:
            raise InvalidSubmission("--nice must be 0 or more (a lower priority)")
        run_projections_until_signalled(rt, options.nice, options.parent_pid)
        return
    if options.action == "status":
        head = rt.reads.head_position()
        for name, runner in rt.runners.items():
            render.console.print(f"{name:<12} position {runner.position():>10}  head {head:>10}")
        return
    names = list(rt.runners) if options.name == "all" else [options.name]
    unknown = [name for name in names if name not in rt.runners]
    if unknown:
        raise InvalidSubmission(
            f"unknown projection {unknown[0]!r} (known: {', '.join(rt.runners)}, all)"
        )
    for name in names:
        _rebuild(rt, name)


def _rebuild(rt: Runtime, name: str) -> None:
    """Rebuild one projection; a running node's runner pauses for it and resumes after."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    def advance(bar: Progress, job: TaskID, done: int, head: int) -> None:
        bar.update(job, completed=done, total=head)

    with Progress(
        TextColumn(f"rebuilding {name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=render.console,
        transient=False,
    ) as bar:
        job = bar.add_task(name, total=rt.reads.head_position() or 1)
        count = rt.runners[name].rebuild(progress=partial(advance, bar, job))
    render.console.print(f"{name}: replayed {count} events")
