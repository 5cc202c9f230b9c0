"""Docker executor: runs one command in a locked-down, throw-away container (docker SDK).

Settings of a task type whose adapter is ``docker``:

- ``image`` (required): an image already present on the engine; it is never pulled.
- ``command``: list of strings, the container's command (empty: the image's own). Like the
  shell executor's ``argv``, ``command[0]`` is literal and the other elements may hold
  templates such as ``"{args.path}"``; each filled element is exactly one argument, whatever
  it contains. ``env``: table of environment variables whose values may hold templates
  (the attempt's trace context comes as ``TRACEPARENT`` / ``TRACESTATE`` unless set here).
- ``network`` (default ``"none"``): ``"host"``, ``"bridge"`` or a named network only with
  ``allow_network = true`` in ``[adapters.docker]``.
- ``memory_bytes`` (default 256 MiB, also the memory + swap limit), ``cpus`` (default 1.0),
  ``pids_limit`` (default 128), ``read_only`` root filesystem (default true; false only with
  ``allow_writable_root = true``), ``user`` (default ``"65534:65534"``, nobody; root only
  with ``allow_root = true``), ``tmpfs``: table of
  mount point to mount options, e.g. ``{"/tmp" = "size=16m"}`` (a mount point the image
  already has keeps that directory's owner and mode: ``/tmp`` should be 1777 there).
- ``max_log_bytes`` (default 1 MiB): stdout and stderr are each kept up to this size and the
  result says ``stdout_truncated`` / ``stderr_truncated``. The excess is read and dropped;
  the container's log file on the engine is rotated past four times that size (at least
  1 MiB; one old file kept), so a flood cannot fill the engine's disk, though the oldest
  output may then be lost.
- ``docker_host``: the engine's address: a ``unix://`` socket, or another address
  (``tcp://``, ``ssh://``...) listed in ``allowed_docker_hosts``; by default ``DOCKER_HOST``
  or the default socket. Settings are checked without contacting the engine.

``allow_root``, ``allow_writable_root``, ``allow_network`` and ``allowed_docker_hosts`` are
read from the file's ``[adapters.docker]`` only: a task type or ad-hoc task cannot give them
(``docker_policy.py``).

Every container has all capabilities dropped, ``no-new-privileges``, is never privileged, and
is labelled ``execution-ledger.task=<task id>``. It is waited for up to ``start_to_close``,
killed if still running, and always removed afterwards. When ``run()`` is cancelled the
container is killed and removed before the cancellation propagates. The SDK is synchronous:
each call runs in a thread, and a call in flight is waited for (never abandoned) so that
nothing it creates is left behind.

Results: exit code 0 gives ``Success({"exit_code", "stdout", "stderr", ...})``, plus ``"json"``
when stdout parses as JSON. Failures: ``ExitCode``, ``Timeout``, ``DockerUnavailable``
(retryable); ``OutOfMemory``, ``ImageNotFound``, ``CommandNotFound``, ``BadArguments`` (not
retryable); ``DockerError`` for other refusals of the engine (retryable when it answered 5xx).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.types import LogConfig

from execution_ledger.adapters.executors import docker_policy
from execution_ledger.adapters.executors.base import (
    Executor,
    positive_int,
    refuse_unknown,
    settle,
    string,
    string_list,
    string_map,
)
from execution_ledger.adapters.executors.inline_code import refuse_templates_in_code
from execution_ledger.adapters.executors.progress_lines import ProgressLines
from execution_ledger.adapters.executors.templates import (
    ArgumentError,
    check_template,
    fill,
)
from execution_ledger.adapters.executors.templates import error_class as _error_class
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import Execution, Failure, ProgressReport, Success
from execution_ledger.domain.trace_context import environment

DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024
MIN_MEMORY_BYTES = 6 * 1024 * 1024  # the engine refuses less
DEFAULT_MAX_LOG_BYTES = 1024 * 1024
LOG_FILE_FACTOR = 4
STDERR_TAIL_CHARS = 4000
API_TIMEOUT_SECONDS = 30
LABEL = "execution-ledger.task"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
KNOWN_SETTINGS = {
    *("image", "command", "env", "network", "memory_bytes", "cpus"),
    *("pids_limit", "read_only", "user", "max_log_bytes", "docker_host", "tmpfs"),
    *docker_policy.DEPLOYMENT_KEYS,
}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
UNAVAILABLE = (docker.errors.DockerException, requests.exceptions.RequestException)
T = TypeVar("T")


@dataclass(frozen=True)
class DockerSettings:
    image: str
    command: tuple[str, ...]
    env: dict[str, str]
    network: str
    memory_bytes: int
    nano_cpus: int
    pids_limit: int
    read_only: bool
    user: str
    max_log_bytes: int
    docker_host: str | None
    tmpfs: dict[str, str]


class DockerExecutor(Executor[DockerSettings]):
    name = "docker"
    deployment_keys = docker_policy.DEPLOYMENT_KEYS

    def parse_settings(self, settings: dict[str, Any]) -> DockerSettings:
        refuse_unknown(settings, KNOWN_SETTINGS)
        command = string_list(settings, "command", [])
        if command and ("{" in command[0] or "}" in command[0] or not command[0]):
            raise ConfigError(
                "the command (command[0]) must be literal, not a template", ("command",)
            )
        for position, item in enumerate(command[1:], start=1):
            check_template(item, ("command", str(position)))
        refuse_templates_in_code(command, "command")
        env = string_map(settings, "env")
        for key, value in env.items():
            if not ENV_NAME.fullmatch(key):
                raise ConfigError(f"bad environment variable name {key!r}", ("env", key))
            check_template(value, ("env", key))
        memory_bytes = positive_int(settings, "memory_bytes", DEFAULT_MEMORY_BYTES)
        if memory_bytes < MIN_MEMORY_BYTES:
            raise ConfigError(f"must be at least {MIN_MEMORY_BYTES} (6 MiB)", ("memory_bytes",))
        # What only [adapters.docker] may loosen, checked before the image it may leave out.
        network, read_only = docker_policy.network(settings), docker_policy.read_only(settings)
        user = docker_policy.user(settings)
        host = docker_policy.docker_host(settings, self.defaults.get("docker_host"))
        return DockerSettings(
            image=string(settings, "image"),
            command=command,
            env=env,
            network=network,
            memory_bytes=memory_bytes,
            nano_cpus=_nano_cpus(settings.get("cpus", 1.0)),
            pids_limit=positive_int(settings, "pids_limit", 128),
            read_only=read_only,
            user=user,
            max_log_bytes=positive_int(settings, "max_log_bytes", DEFAULT_MAX_LOG_BYTES),
            docker_host=host,
            tmpfs=_tmpfs(settings),
        )

    async def execute(self, settings: DockerSettings, execution: Execution) -> Success | Failure:
        try:
            command = [
                *settings.command[:1],
                *(
                    fill(item, execution.args, deps=execution.inputs)
                    for item in settings.command[1:]
                ),
            ]
            env = environment(execution.trace) | {  # TRACEPARENT, unless set
                key: fill(value, execution.args, deps=execution.inputs)
                for key, value in settings.env.items()
            }
        except ArgumentError as exc:
            return Failure(_error_class(exc), str(exc), retryable=False)
        try:
            client = await _in_thread(
                _connect, settings.docker_host, undo=docker.DockerClient.close
            )
        except UNAVAILABLE as exc:
            return _unavailable(exc)
        try:
            return await _run_container(client, settings, execution, command, env)
        except docker.errors.ImageNotFound:
            return Failure(
                "ImageNotFound", f"image {settings.image!r} is not on the engine", retryable=False
            )
        except docker.errors.APIError as exc:
            return _api_failure(exc)
        except UNAVAILABLE as exc:
            return _unavailable(exc)
        finally:
            await settle(asyncio.to_thread(client.close))


async def _run_container(
    client: docker.DockerClient,
    settings: DockerSettings,
    execution: Execution,
    command: list[str],
    env: dict[str, str],
) -> Success | Failure:
    """Create, start and wait for the container; it is removed whatever happens."""
    name = f"ledger-{execution.task_id.hex[:12]}-{execution.attempt}-{secrets.token_hex(3)}"
    try:
        container: Container = await _in_thread(
            client.containers.create,
            settings.image,
            command or None,
            name=name,
            **_container_options(settings, execution, env),
        )
        await _in_thread(container.start)
        timeout = execution.timeouts.start_to_close
        loop = asyncio.get_running_loop()
        if execution.progress is not None:  # ::progress lines, as a shell task writes them
            lines = ProgressLines(_on_loop(loop, execution.progress))
            following = asyncio.ensure_future(asyncio.to_thread(_follow, container, lines))
            following.add_done_callback(lambda f: f.cancelled() or f.exception())
        started = loop.time()
        waiting = asyncio.ensure_future(asyncio.to_thread(container.wait, timeout=timeout))
        try:
            status = await asyncio.shield(waiting)
        except asyncio.CancelledError:
            await settle(asyncio.to_thread(_kill, container))
            await settle(waiting)  # returns now that the container is dead
            raise
        except (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout):
            # A wait that times out surfaces as either; before the timeout, the engine is gone.
            if loop.time() - started < timeout:
                raise
            await _in_thread(_kill, container)
            _stdout, stderr = await _in_thread(
                _capped_logs, client, container, settings.max_log_bytes
            )
            return Failure(
                "Timeout",
                f"the container was still running after {timeout:g}s and was killed",
                details={"stderr": stderr.text[-STDERR_TAIL_CHARS:]},
            )
        await _in_thread(container.reload)
        stdout, stderr = await _in_thread(_capped_logs, client, container, settings.max_log_bytes)
    finally:  # by name: a create call that was in flight when cancelled has finished by now
        await settle(asyncio.to_thread(_remove, client, name))
    exit_code = status.get("StatusCode")
    if exit_code == 0:
        return _success(stdout, stderr)
    tail = stderr.text[-STDERR_TAIL_CHARS:]
    if container.attrs.get("State", {}).get("OOMKilled"):
        return Failure(
            "OutOfMemory",
            f"the container went past its memory limit of {settings.memory_bytes} bytes",
            retryable=False,
            details={"exit_code": exit_code, "memory_bytes": settings.memory_bytes, "stderr": tail},
        )
    return Failure(
        "ExitCode",
        f"{command[0] if command else settings.image} exited with code {exit_code}",
        details={"exit_code": exit_code, "stderr": tail},
    )


def _on_loop(loop: asyncio.AbstractEventLoop, report: ProgressReport) -> ProgressReport:
    """``report``, callable from another thread: each note is handed to ``loop``."""

    def note(progress: float | None, message: str | None) -> None:
        loop.call_soon_threadsafe(report, progress, message)

    return note


def _follow(container: Container, lines: ProgressLines) -> None:
    """Feed the container's stdout to ``lines`` until it ends (the container stops)."""
    for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=False):
        lines.feed(chunk)


def _container_options(
    settings: DockerSettings, execution: Execution, env: dict[str, str]
) -> dict[str, Any]:
    """The locked-down host configuration of every container, as ``containers.create`` takes it."""
    log_file_bytes = max(settings.max_log_bytes * LOG_FILE_FACTOR, 1024 * 1024)
    return {
        "labels": {
            LABEL: str(execution.task_id),
            "execution-ledger.attempt": str(execution.attempt),
            "execution-ledger.type": execution.type_name,
        },
        "environment": env,
        "network_mode": settings.network,
        "mem_limit": settings.memory_bytes,
        "memswap_limit": settings.memory_bytes,
        "nano_cpus": settings.nano_cpus,
        "pids_limit": settings.pids_limit,
        "read_only": settings.read_only,
        "user": settings.user,
        "tmpfs": settings.tmpfs,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "privileged": False,
        "stdin_open": False,
        "tty": False,
        "log_config": LogConfig(
            type=LogConfig.types.JSON, config={"max-size": str(log_file_bytes), "max-file": "2"}
        ),
    }


@dataclass(frozen=True)
class CappedLog:
    """The first ``cap`` bytes of one output stream, and whether there was more."""

    data: bytes
    truncated: bool

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _capped_logs(
    client: docker.DockerClient, container: Container, cap: int
) -> tuple[CappedLog, CappedLog]:
    """Reads stdout and stderr of the container to their ends, keeping the first ``cap`` bytes
    of each (the engine's rotated log file bounds what is read and dropped)."""
    logs = []
    for stdout in (True, False):
        stream = client.api.logs(
            container.id, stdout=stdout, stderr=not stdout, stream=True, follow=False
        )
        kept, truncated = bytearray(), False
        try:
            for chunk in stream:
                truncated = truncated or len(chunk) > cap - len(kept)
                kept += chunk[: cap - len(kept)]
        finally:
            stream.close()
        logs.append(CappedLog(bytes(kept), truncated))
    return logs[0], logs[1]


def _success(stdout: CappedLog, stderr: CappedLog) -> Success:
    result: dict[str, Any] = {
        "exit_code": 0,
        "stdout": stdout.text,
        "stderr": stderr.text,
        "stdout_truncated": stdout.truncated,
        "stderr_truncated": stderr.truncated,
    }
    if not stdout.truncated:
        with contextlib.suppress(ValueError):
            result["json"] = json.loads(stdout.text)
    return Success(result, details={"exit_code": 0})


def _api_failure(exc: docker.errors.APIError) -> Failure:
    explanation = str(exc.explanation or exc)
    if "executable file not found" in explanation or "no such file or directory" in explanation:
        return Failure("CommandNotFound", explanation, retryable=False)
    return Failure(
        "DockerError",
        explanation,
        retryable=exc.is_server_error(),
        details={"status": exc.status_code},
    )


def _unavailable(exc: Exception) -> Failure:
    return Failure("DockerUnavailable", f"the Docker engine cannot be reached: {exc}")


def _connect(docker_host: str | None) -> docker.DockerClient:
    """A client of the engine; asks its API version, so an unreachable engine fails here."""
    address = docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    if address.startswith("unix://") and not os.path.exists(address.removeprefix("unix://")):
        raise docker.errors.DockerException(f"there is no socket at {address}")
    if docker_host is None:
        return docker.from_env(version="auto", timeout=API_TIMEOUT_SECONDS)
    return docker.DockerClient(base_url=docker_host, version="auto", timeout=API_TIMEOUT_SECONDS)


def _kill(container: Container) -> None:
    with contextlib.suppress(docker.errors.APIError, *UNAVAILABLE):
        container.kill()


def _remove(client: docker.DockerClient, name: str) -> None:
    """Kills (if need be) and removes the container; it may never have been created."""
    with contextlib.suppress(docker.errors.NotFound):
        client.api.remove_container(name, force=True)


async def _in_thread(
    func: Callable[..., T], *args: Any, undo: Callable[[T], Any] | None = None, **kwargs: Any
) -> T:
    """Runs blocking ``func`` in a thread. If this task is cancelled meanwhile, the call is
    still waited for, and what it returned handed to ``undo``, before the cancellation
    propagates (so nothing it made is left behind unknown)."""
    call = asyncio.ensure_future(asyncio.to_thread(func, *args, **kwargs))
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        await settle(call)
        if undo is not None and not call.cancelled() and call.exception() is None:
            await settle(asyncio.to_thread(undo, call.result()))
        raise


def _nano_cpus(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1024:
        raise ConfigError(f"must be a number of CPUs above 0, got {value!r}", ("cpus",))
    return int(value * 1_000_000_000)


def _tmpfs(settings: dict[str, Any]) -> dict[str, str]:
    tmpfs = string_map(settings, "tmpfs")
    for path in tmpfs:
        if not path.startswith("/") or ":" in path:
            raise ConfigError(f"must be an absolute path, got {path!r}", ("tmpfs", path))
    return tmpfs
