"""Shell executor: runs one command from argv templates in a scrubbed, limited process group.

Settings of a task type whose adapter is ``shell``:

- ``argv`` (required): list of strings. ``argv[0]`` is a literal command, looked up on the
  child's ``PATH``. The other elements may hold templates such as ``"{args.path}"`` or
  ``"{args[name]}"``; each filled element is exactly one argument, whatever it contains. No
  shell is involved unless the task type itself names one (``["sh", "-c", "...", "sh",
  "{args.x}"]`` passes ``x`` as ``$1``, still never as shell text). Literal braces are
  written ``{{`` and ``}}``. A template inside code an interpreter runs (``sh -c "echo
  {args.x}"``, ``python3 -c``, ``perl -e``, an awk program...) or in its options is refused
  by the settings check (``inline_code.py``).
- ``cwd``: working directory; by default a fresh temporary directory, removed afterwards
  (under this process's own parent directory, so that one left by a killed worker is
  removed by the next worker node to start on this host: ``shell_scratch.py``).
- ``env``: extra environment variables. The child sees only ``PATH=/usr/bin:/bin``,
  ``HOME`` (the working directory), ``LANG=C.UTF-8``, the attempt's trace context
  (``TRACEPARENT``, ``TRACESTATE``, when it has one) and these.
- ``max_output_bytes`` (default 1 MiB): stdout and stderr are each kept up to this size; the
  excess is read and dropped and the result says ``stdout_truncated`` / ``stderr_truncated``.
- ``cpu_seconds``, ``memory_bytes`` (address space), ``file_size_bytes``, ``max_processes``:
  resource limits set in the child before it executes the command (``max_processes`` is
  RLIMIT_NPROC, which is per user and not enforced for root).

The command runs in its own session (process group). When it exits, what is left of its group
is killed; when ``run()`` is cancelled, the whole group is killed with SIGKILL and the command
reaped before the cancellation propagates.

Results: exit code 0 gives ``Success({"stdout", "stderr", "exit_code", ...})``, plus ``"json"``
when stdout parses as JSON. Failures: ``ExitCode`` and ``Signal`` (retryable),
``CommandNotFound`` and ``BadArguments`` (not retryable), ``SpawnError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from execution_ledger.adapters.executors.base import (
    Executor,
    optional_int,
    positive_int,
    refuse_unknown,
    settle,
    string_list,
    string_map,
)
from execution_ledger.adapters.executors.inline_code import refuse_templates_in_code
from execution_ledger.adapters.executors.progress_lines import ProgressLines
from execution_ledger.adapters.executors.shell_scratch import scratch_directory
from execution_ledger.adapters.executors.templates import (
    ArgumentError,
    check_template,
    fill,
)
from execution_ledger.adapters.executors.templates import error_class as _error_class
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import Execution, Failure, ProgressReport, Success
from execution_ledger.domain.trace_context import environment

BASE_PATH = "/usr/bin:/bin"
DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
STDERR_TAIL_CHARS = 4000
LIMITS = {
    "cpu_seconds": resource.RLIMIT_CPU,
    "memory_bytes": resource.RLIMIT_AS,
    "file_size_bytes": resource.RLIMIT_FSIZE,
    "max_processes": resource.RLIMIT_NPROC,
}
KNOWN_SETTINGS = {"argv", "cwd", "env", "max_output_bytes", *LIMITS}


@dataclass(frozen=True)
class ShellSettings:
    argv: tuple[str, ...]
    cwd: str | None
    env: dict[str, str]
    max_output_bytes: int
    limits: tuple[tuple[int, int], ...]


class ShellExecutor(Executor[ShellSettings]):
    name = "shell"

    def parse_settings(self, settings: dict[str, Any]) -> ShellSettings:
        refuse_unknown(settings, KNOWN_SETTINGS)
        argv = string_list(settings, "argv", [])
        if not argv or not argv[0]:
            raise ConfigError("must name a command", ("argv",))
        if "{" in argv[0] or "}" in argv[0]:
            raise ConfigError("the command (argv[0]) must be literal, not a template", ("argv",))
        for position, item in enumerate(argv[1:], start=1):
            check_template(item, ("argv", str(position)))
        refuse_templates_in_code(argv, "argv")
        cwd = settings.get("cwd")
        if cwd is not None and not (isinstance(cwd, str) and os.path.isdir(cwd)):
            raise ConfigError(f"must be an existing directory, got {cwd!r}", ("cwd",))
        limits = tuple(
            (limit, value)
            for key, limit in LIMITS.items()
            if (value := optional_int(settings, key)) is not None
        )
        return ShellSettings(
            argv=argv,
            cwd=cwd,
            env=string_map(settings, "env"),
            max_output_bytes=positive_int(settings, "max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES),
            limits=limits,
        )

    async def execute(self, settings: ShellSettings, execution: Execution) -> Success | Failure:
        try:
            argv = [
                settings.argv[0],
                *(fill(item, execution.args, deps=execution.inputs) for item in settings.argv[1:]),
            ]
        except ArgumentError as exc:
            return Failure(_error_class(exc), str(exc), retryable=False)
        with scratch_directory() as scratch:
            cwd = settings.cwd or scratch
            env = {"PATH": BASE_PATH, "HOME": cwd, "LANG": "C.UTF-8"}
            env |= environment(execution.trace) | settings.env  # TRACEPARENT unless set
            loop = asyncio.get_running_loop()
            spawn = asyncio.ensure_future(
                loop.subprocess_exec(
                    lambda: CommandOutput(settings.max_output_bytes, loop, execution.progress),
                    *argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_limiter(settings.limits) if settings.limits else None,
                )
            )
            try:
                # Shielded: a cancellation during the spawn must not leave the command
                # running (asyncio would kill the process, not its group).
                transport, output = await asyncio.shield(spawn)
            except asyncio.CancelledError:
                await _stop_spawned(spawn)
                raise
            except (FileNotFoundError, PermissionError) as exc:
                if exc.filename != argv[0]:
                    return Failure("SpawnError", str(exc))
                return Failure(
                    "CommandNotFound",
                    f"{argv[0]}: {exc.strerror} (PATH={env['PATH']})",
                    retryable=False,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                return Failure("SpawnError", str(exc))
            group = transport.get_pid()
            try:  # shielded: cancelling this task must not cancel the protocol's futures
                await asyncio.shield(output.exited)
                _kill_group(group)  # background children the command left behind
                await asyncio.shield(output.closed)
            finally:
                if transport.get_returncode() is None:  # cancelled while the command runs
                    _kill_group(group)
                    await settle(output.exited)  # even if cancelled again meanwhile
                    # A child forked while the first signal was being delivered escapes it;
                    # its parent is dead now, so a second signal reaches everything left.
                    _kill_group(group)
                transport.close()
        return _result(argv[0], transport.get_returncode(), output)


async def _stop_spawned(spawn: asyncio.Future[Any]) -> None:
    """Wait for a spawn that was cancelled half-way, then kill what it started."""
    await settle(spawn)
    if spawn.cancelled() or spawn.exception() is not None:
        return  # it failed to start: nothing runs
    transport, output = spawn.result()
    group = transport.get_pid()
    _kill_group(group)
    await settle(output.exited)
    _kill_group(group)
    transport.close()


class CommandOutput(asyncio.SubprocessProtocol):
    """Keeps the first ``cap`` bytes of stdout and stderr (reading and dropping the rest) and
    tells when the command has exited and when its pipes are closed. Lines of stdout that
    start with ``::progress`` go to ``report`` as they come (``progress_lines.py``)."""

    def __init__(
        self,
        cap: int,
        loop: asyncio.AbstractEventLoop,
        report: ProgressReport | None = None,
    ) -> None:
        self.progress = ProgressLines(report) if report is not None else None
        self.cap = cap
        self.kept = {1: bytearray(), 2: bytearray()}
        self.truncated = {1: False, 2: False}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1 and self.progress is not None:
            self.progress.feed(data)
        room = self.cap - len(self.kept[fd])
        self.truncated[fd] = self.truncated[fd] or len(data) > room
        self.kept[fd] += data[:room]

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def text(self, fd: int) -> str:
        return self.kept[fd].decode("utf-8", errors="replace")


def _limiter(limits: tuple[tuple[int, int], ...]) -> Callable[[], None]:
    """A ``preexec_fn`` that lowers soft and hard limits (so the command cannot raise them).
    The CPU hard limit is one second above the soft one, so SIGXCPU comes before SIGKILL.
    Between fork and exec it only calls ``setrlimit``, which takes no lock."""
    ceilings = []
    for limit, value in limits:
        _soft, hard = resource.getrlimit(limit)
        ceiling = value + 1 if limit == resource.RLIMIT_CPU else value
        if hard != resource.RLIM_INFINITY:
            value, ceiling = min(value, hard), min(ceiling, hard)
        ceilings.append((limit, value, ceiling))

    def apply_limits() -> None:
        for limit, soft, hard in ceilings:
            resource.setrlimit(limit, (soft, hard))

    return apply_limits


def _result(command: str, exit_code: int | None, output: CommandOutput) -> Success | Failure:
    stdout, stderr = output.text(1), output.text(2)
    if exit_code == 0:
        result: dict[str, Any] = {
            "stdout": stdout,
            "stderr": stderr,
            "exit_code": 0,
            "stdout_truncated": output.truncated[1],
            "stderr_truncated": output.truncated[2],
        }
        if not output.truncated[1]:
            with contextlib.suppress(ValueError):
                result["json"] = json.loads(stdout)
        return Success(result, details={"exit_code": 0})
    tail = stderr[-STDERR_TAIL_CHARS:]
    if exit_code is not None and exit_code < 0:
        name = _signal_name(-exit_code)
        return Failure(
            "Signal", f"{command} was killed by {name}", details={"signal": name, "stderr": tail}
        )
    return Failure(
        "ExitCode",
        f"{command} exited with code {exit_code}",
        details={"exit_code": exit_code, "stderr": tail},
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _kill_group(group_id: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group_id, signal.SIGKILL)
