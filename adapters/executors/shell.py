"""Shell executor: runs one command from argv templates in a scrubbed, limited process group.

Settings of a task type whose adapter is ``shell``:

- ``argv`` (required): list of strings. ``argv[0]`` is a literal command, looked up on the
  child's ``PATH``. The other elements may hold templates such as ``"{args.path}"`` or
  ``"{args[name]}"``; each filled element is exactly one argument, whatever it contains. No
  shell is involved unless the task type itself names one (``["sh", "-c", "...", "sh",
  "{args.x}"]`` passes ``x`` as ``$1``, still never as shell text).
- ``cwd``: working directory; by default a fresh temporary directory, removed afterwards.
- ``env``: extra environment variables. The child sees only ``PATH=/usr/bin:/bin``,
  ``HOME`` (the working directory), ``LANG=C.UTF-8`` and these.
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
import json
import os
import resource
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.executors.base import (
    Executor,
    optional_int,
    positive_int,
    refuse_unknown,
    string_list,
    string_map,
)
from adapters.executors.templates import ArgumentError, check_template, fill
from domain.errors import ConfigError
from domain.execution import Execution, Failure, Success

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
            argv = [settings.argv[0], *(fill(item, execution.args) for item in settings.argv[1:])]
        except ArgumentError as exc:
            return Failure("BadArguments", str(exc), retryable=False)
        with tempfile.TemporaryDirectory(prefix="ledger-shell-") as scratch:
            cwd = settings.cwd or scratch
            env = {"PATH": BASE_PATH, "HOME": cwd, "LANG": "C.UTF-8", **settings.env}
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_limiter(settings.limits) if settings.limits else None,
                )
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
            return await _finish(process, argv[0], settings.max_output_bytes)


def _limiter(limits: tuple[tuple[int, int], ...]) -> Callable[[], None]:
    """A ``preexec_fn`` that lowers soft and hard limits (so the command cannot raise them)."""
    ceilings = []
    for limit, value in limits:
        _soft, hard = resource.getrlimit(limit)
        ceilings.append((limit, value if hard == resource.RLIM_INFINITY else min(value, hard)))

    def apply_limits() -> None:
        for limit, value in ceilings:
            resource.setrlimit(limit, (value, value))

    return apply_limits


async def _finish(
    process: asyncio.subprocess.Process, command: str, max_output_bytes: int
) -> Success | Failure:
    assert process.stdout is not None and process.stderr is not None
    stdout_reader = asyncio.ensure_future(_read_capped(process.stdout, max_output_bytes))
    stderr_reader = asyncio.ensure_future(_read_capped(process.stderr, max_output_bytes))
    try:
        exit_code = await process.wait()
        _kill_group(process.pid)  # background children left behind by the command
        stdout, stdout_truncated = await stdout_reader
        stderr, stderr_truncated = await stderr_reader
    finally:
        if process.returncode is None:  # cancelled while the command runs
            _kill_group(process.pid)
            await process.wait()
        stdout_reader.cancel()
        stderr_reader.cancel()
    if exit_code == 0:
        result: dict[str, Any] = {
            "stdout": stdout,
            "stderr": stderr,
            "exit_code": 0,
            "stdout_truncated": stdout_truncated,
            "stderr_truncated": stderr_truncated,
        }
        if not stdout_truncated:
            try:
                result["json"] = json.loads(stdout)
            except ValueError:
                pass
        return Success(result, details={"exit_code": 0})
    tail = stderr[-STDERR_TAIL_CHARS:]
    if exit_code < 0:
        name = _signal_name(-exit_code)
        return Failure(
            "Signal", f"{command} was killed by {name}", details={"signal": name, "stderr": tail}
        )
    return Failure(
        "ExitCode",
        f"{command} exited with code {exit_code}",
        details={"exit_code": exit_code, "stderr": tail},
    )


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[str, bool]:
    """Read ``stream`` to its end, keeping the first ``cap`` bytes; say if any were dropped."""
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(64 * 1024):
        room = cap - len(kept)
        truncated = truncated or len(chunk) > room
        kept += chunk[:room]
    return kept.decode("utf-8", errors="replace"), truncated


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _kill_group(group_id: int) -> None:
    try:
        os.killpg(group_id, signal.SIGKILL)
    except ProcessLookupError:
        pass
