"""The projections of a worker node in a child process, at a lower CPU priority.

Claims read the dispatch queue, which is written with the events, so no dispatch decision
waits on a projection. Run in the worker's own interpreter, the four projection runners
would still take most of its one GIL (about half the drain rate on 2 cores); in a child
process they take another core when one is free, and at ``nice`` 10 they give way to the
worker and to PostgreSQL when none is: under a burst they fall behind and catch up after.

The child is ``ledger projections run --nice N --parent-pid PID`` with the node's
database, schema and registry file; it is restarted if it exits, stopped (SIGTERM, then
SIGKILL) with the node, and stops by itself within a second if the node is killed. It runs
in a session of its own, so a Ctrl-C at the terminal goes to the node only. Only one
process runs each projection at a time (advisory locks), so the children of several nodes
stand by for one another.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from execution_ledger.adapters.runtime import Runtime

log = logging.getLogger(__name__)
NICENESS = 10
RESTART_PAUSE = 1.0
STOP_GRACE = 10.0


def child_environment(runtime: Runtime) -> dict[str, str]:
    """The environment that makes the child open the same ledger as ``runtime``."""
    env = dict(os.environ)
    env["LEDGER_DATABASE_URL"] = runtime.database_url
    env["LEDGER_SCHEMA"] = runtime.settings.schema
    source = runtime.settings.config.source
    if source.startswith("<"):  # the built-in registry
        env.pop("LEDGER_CONFIG", None)
    else:
        env["LEDGER_CONFIG"] = source
    return env


class ProjectionProcess:
    def __init__(self, runtime: Runtime, niceness: int = NICENESS) -> None:
        self.runtime = runtime
        self.niceness = niceness
        self.process: asyncio.subprocess.Process | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "execution_ledger.adapters.cli.main",
            "projections",
            "run",
            "--nice",
            str(self.niceness),
            "--parent-pid",
            str(os.getpid()),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the child running until ``stop`` is set (or this task is cancelled);
        then stop it."""
        while not stop.is_set():
            # Its own session: a Ctrl-C at the terminal reaches the node, which stops the
            # child itself (SIGTERM), never the child half-started (a KeyboardInterrupt).
            # Its stdout (one "following the log" line) is dropped: written into the node's
            # terminal, it would break a live display (ledger demo); warnings still show.
            self.process = await asyncio.create_subprocess_exec(
                *self.command(),
                env=child_environment(self.runtime),
                start_new_session=True,
                stdout=asyncio.subprocess.DEVNULL,
            )
            try:
                exited = await self._exit_or_stop(self.process, stop)
            finally:
                if self.process.returncode is None:
                    await self._stop_child(self.process)
            if exited:
                log.warning(
                    "projection process exited with status %s; restarting",
                    self.process.returncode,
                )
                await asyncio.sleep(RESTART_PAUSE)

    @staticmethod
    async def _exit_or_stop(process: asyncio.subprocess.Process, stop: asyncio.Event) -> bool:
        """Wait until the child exits (True) or ``stop`` is set (False)."""
        exited = asyncio.create_task(process.wait())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            stopping.cancel()
        return process.returncode is not None

    @staticmethod
    async def _stop_child(process: asyncio.subprocess.Process) -> None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except TimeoutError:
            log.warning("projection process did not stop within %s s; killing it", STOP_GRACE)
            process.kill()
            await process.wait()
