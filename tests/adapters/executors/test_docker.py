"""The docker executor runs commands in locked-down throw-away containers on a real engine.

The engine is the one at DOCKER_HOST, else a private one that ``.ci/start-docker`` starts;
where none can be had, the tests that need one skip, naming what is missing. The settings
checks need no engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import threading
from collections.abc import Iterator
from uuid import UUID

import docker
import pytest

from execution_ledger.adapters.executors.docker import DockerExecutor
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import Failure, Success
from tests.adapters.executors.docker_support import IMAGE, NoEngine, client_of, find_engine

# A connection, thread or future left behind by a run fails the test.
pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)


class Engine:
    """A running engine: its address, a client to look at it, and an executor that uses it."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.client = client_of(host)
        self.executor = DockerExecutor({"image": IMAGE, "docker_host": host})

    def containers_of(self, task_id: UUID) -> list[docker.models.containers.Container]:
        label = f"execution-ledger.task={task_id}"
        # ignore_removed: docker-py lists, then inspects each; one removed in between (the
        # executor cleaning up) would raise NotFound instead of being left out.
        return self.client.containers.list(
            all=True, filters={"label": label}, ignore_removed=True
        )


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    try:
        host = find_engine()
    except NoEngine as exc:
        pytest.skip(f"no Docker engine: {exc}")
    running = Engine(host)
    yield running
    running.client.close()


@pytest.mark.asyncio
async def test_a_successful_command_returns_its_output_and_exit_code_zero(
    engine, execution
) -> None:
    run = execution({"command": ["echo", "hello", "{args.name}"]}, {"name": "Ada"})

    result = await engine.executor.run(run)

    assert result == Success(
        {
            "exit_code": 0,
            "stdout": "hello Ada\n",
            "stderr": "",
            "stdout_truncated": False,
            "stderr_truncated": False,
        },
        details={"exit_code": 0},
    )
    assert engine.containers_of(run.task_id) == []


@pytest.mark.asyncio
async def test_json_printed_on_stdout_is_also_returned_parsed(engine, execution) -> None:
    result = await engine.executor.run(execution({"command": ["echo", '{{"answer": 42}}']}))

    assert isinstance(result, Success)
    assert result.result["json"] == {"answer": 42}


@pytest.mark.asyncio
async def test_a_nonzero_exit_is_a_retryable_exit_code_failure_and_the_container_is_removed(
    engine, execution
) -> None:
    run = execution({"command": ["sh", "-c", "echo broken >&2; exit 3"]})

    result = await engine.executor.run(run)

    assert result == Failure(
        "ExitCode", "sh exited with code 3", details={"exit_code": 3, "stderr": "broken\n"}
    )
    assert engine.containers_of(run.task_id) == []


@pytest.mark.asyncio
async def test_args_fill_command_and_env_templates_and_shell_syntax_stays_one_argument(
    engine, execution
) -> None:
    text = "a; rm -rf / && echo $HOME `id` | cat"
    settings = {
        "command": ["sh", "-c", 'printf "[%s]\\n" "$@" "$GREETING"', "sh", "{args.text}"],
        "env": {"GREETING": "hello {args[name]}"},
    }

    result = await engine.executor.run(execution(settings, {"text": text, "name": "two words"}))

    assert isinstance(result, Success)
    assert result.result["stdout"] == f"[{text}]\n[hello two words]\n"


@pytest.mark.asyncio
async def test_the_container_has_no_network_by_default(engine, execution) -> None:
    # Interfaces and routes: only loopback, and no route anywhere (nothing is sent).
    probe = "ls /sys/class/net; ip route; ip -6 route 2>/dev/null; true"

    result = await engine.executor.run(execution({"command": ["sh", "-c", probe]}))

    assert isinstance(result, Success)
    assert result.result["stdout"].splitlines() == ["lo"]


@pytest.mark.asyncio
async def test_the_root_filesystem_is_read_only_and_the_user_is_nobody(engine, execution) -> None:
    settings = {"command": ["sh", "-c", "id -u; id -g; touch /written 2>&1 || echo refused"]}

    result = await engine.executor.run(execution(settings))

    assert isinstance(result, Success)
    assert result.result["stdout"].splitlines() == [
        "65534",
        "65534",
        "touch: /written: Read-only file system",
        "refused",
    ]


@pytest.mark.asyncio
async def test_a_tmpfs_gives_a_writable_scratch_directory(engine, execution) -> None:
    settings = {
        "command": ["sh", "-c", "echo kept > /tmp/note && cat /tmp/note"],
        "tmpfs": {"/tmp": "size=1m"},
    }

    result = await engine.executor.run(execution(settings))

    assert isinstance(result, Success)
    assert result.result["stdout"] == "kept\n"


@pytest.mark.asyncio
async def test_a_task_type_may_ask_for_root_when_its_image_needs_it(engine, execution) -> None:
    executor = DockerExecutor({"image": IMAGE, "docker_host": engine.host, "allow_root": True})
    result = await executor.run(execution({"command": ["id", "-u"], "user": "0"}))

    assert isinstance(result, Success)
    assert result.result["stdout"] == "0\n"


@pytest.mark.asyncio
async def test_every_container_is_labelled_and_locked_down(engine, execution) -> None:
    run = execution({"command": ["sleep", "2"], "memory_bytes": 64 * 2**20, "cpus": 0.5})
    running = asyncio.create_task(engine.executor.run(run))
    try:
        for _ in range(50):
            if found := engine.containers_of(run.task_id):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the container never appeared")
        host_config = found[0].attrs["HostConfig"]
        config = found[0].attrs["Config"]
    finally:
        result = await running

    assert isinstance(result, Success)
    assert config["User"] == "65534:65534"
    assert config["Labels"]["execution-ledger.attempt"] == "1"
    assert {
        key: host_config[key]
        for key in (
            "CapDrop",
            "SecurityOpt",
            "Privileged",
            "NetworkMode",
            "ReadonlyRootfs",
            "Memory",
            "NanoCpus",
            "PidsLimit",
        )
    } == {
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "Privileged": False,
        "NetworkMode": "none",
        "ReadonlyRootfs": True,
        "Memory": 64 * 2**20,
        "NanoCpus": 500_000_000,
        "PidsLimit": 128,
    }
    assert engine.containers_of(run.task_id) == []


@pytest.mark.asyncio
async def test_a_container_over_its_memory_limit_is_an_out_of_memory_failure(
    engine, execution
) -> None:
    settings = {
        "command": ["sh", "-c", "x=grow; while true; do x=$x$x; done"],
        "memory_bytes": 32 * 2**20,
    }

    result = await engine.executor.run(execution(settings, start_to_close=20))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("OutOfMemory", False)
    assert result.details["exit_code"] == 137


@pytest.mark.asyncio
async def test_the_pids_limit_stops_a_process_flood(engine, execution) -> None:
    settings = {
        "command": ["sh", "-c", "for i in $(seq 30); do sleep 5 & done; wait"],
        "pids_limit": 8,
    }

    result = await engine.executor.run(execution(settings))

    assert isinstance(result, Failure)
    assert result.error_class == "ExitCode"
    assert "can't fork" in result.details["stderr"]


@pytest.mark.asyncio
async def test_cancelling_the_run_kills_and_removes_its_container(engine, execution) -> None:
    run = execution({"command": ["sleep", "600"]}, start_to_close=900)
    running = asyncio.create_task(engine.executor.run(run))
    for _ in range(1200):  # bounded: until its container runs (a loaded machine is slow)
        if any(c.status == "running" for c in engine.containers_of(run.task_id)):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the container never started")

    running.cancel()
    await asyncio.wait({running}, timeout=60)  # bounded: a run left waiting for sleep fails

    assert running.cancelled(), "the cancelled run did not end"
    assert engine.containers_of(run.task_id) == []


@pytest.mark.asyncio
@pytest.mark.parametrize("delay", [0, 0.03, 0.2])
async def test_a_run_cancelled_early_and_again_while_cleaning_up_leaves_no_container(
    engine, execution, delay
) -> None:
    run = execution({"command": ["sleep", "30"]}, start_to_close=60)
    running = asyncio.create_task(engine.executor.run(run))
    await asyncio.sleep(delay)  # while the container is being created, started, waited for

    running.cancel()
    await asyncio.sleep(0.01)
    running.cancel()

    with pytest.raises(asyncio.CancelledError):
        await running
    assert engine.containers_of(run.task_id) == []


@pytest.mark.asyncio
async def test_a_container_still_running_at_start_to_close_is_killed_as_a_timeout(
    engine, execution
) -> None:
    run = execution({"command": ["sh", "-c", "echo waiting >&2; sleep 30"]}, start_to_close=1)

    result = await engine.executor.run(run)

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("Timeout", True)
    assert result.details == {"stderr": "waiting\n"}
    assert engine.containers_of(run.task_id) == []


@pytest.mark.asyncio
async def test_output_past_max_log_bytes_is_cut_and_flagged_per_stream(engine, execution) -> None:
    flood = "head -c 3000000 /dev/zero | tr '\\0' o; head -c 5000 /dev/zero | tr '\\0' e >&2"
    settings = {"command": ["sh", "-c", flood], "max_log_bytes": 1000}

    result = await engine.executor.run(execution(settings))

    assert isinstance(result, Success)
    assert (result.result["stdout"], result.result["stdout_truncated"]) == ("o" * 1000, True)
    assert (result.result["stderr"], result.result["stderr_truncated"]) == ("e" * 1000, True)
    assert "json" not in result.result


@pytest.mark.asyncio
async def test_a_missing_image_is_a_non_retryable_image_not_found_failure(
    engine, execution
) -> None:
    result = await engine.executor.run(
        execution({"image": "ledger-no-such-image:latest", "command": ["true"]})
    )

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("ImageNotFound", False)


@pytest.mark.asyncio
async def test_a_missing_command_is_a_non_retryable_command_not_found_failure(
    engine, execution
) -> None:
    run = execution({"command": ["no-such-command-here"]})

    result = await engine.executor.run(run)

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("CommandNotFound", False)
    assert engine.containers_of(run.task_id) == []


@pytest.mark.asyncio
async def test_an_unreachable_engine_is_a_retryable_docker_unavailable_failure(
    execution, tmp_path
) -> None:
    executor = DockerExecutor({"image": IMAGE, "docker_host": f"unix://{tmp_path}/none.sock"})

    result = await executor.run(execution({"command": ["true"]}))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("DockerUnavailable", True)


@pytest.mark.asyncio
async def test_args_that_do_not_fit_the_templates_are_bad_arguments(execution, tmp_path) -> None:
    # No engine listens there: the arguments are refused before one would be called.
    executor = DockerExecutor({"image": IMAGE, "docker_host": f"unix://{tmp_path}/none.sock"})

    result = await executor.run(execution({"command": ["echo", "{args.missing}"]}))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("BadArguments", False)


class EngineStandIn:
    """A unix socket where an engine would listen: it records the first bytes of every
    connection, in order, and closes it (so a client that calls fails at once)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.received: list[bytes] = []
        self.arrived = threading.Condition()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            with connection, self.arrived:
                connection.settimeout(5)
                with contextlib.suppress(OSError):
                    self.received.append(connection.recv(64))
                self.arrived.notify_all()

    def connections_before_now(self) -> list[bytes]:
        """What arrived before this call: a marker connection goes last, and connections
        are accepted in order, so once it is seen everything earlier was seen too."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as marker:
            marker.connect(self.path)
            marker.sendall(b"marker")
            with self.arrived:
                seen = self.arrived.wait_for(lambda: b"marker" in self.received, timeout=30)
        assert seen, "the stand-in never saw the marker connection"
        return self.received[: self.received.index(b"marker")]

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def engine_stand_in() -> Iterator[EngineStandIn]:
    with tempfile.TemporaryDirectory(prefix="ledger-dk-") as directory:  # a short socket path
        stand_in = EngineStandIn(f"{directory}/engine.sock")
        yield stand_in
        stand_in.close()


def test_good_settings_are_accepted_without_contacting_an_engine(
    engine_stand_in: EngineStandIn,
) -> None:
    executor = DockerExecutor(  # the loosening keys come from [adapters.docker]
        {
            "docker_host": f"unix://{engine_stand_in.path}",
            "allow_network": True,
            "allow_root": True,
            "allow_writable_root": True,
        }
    )
    executor.check_settings(
        {
            "image": "python:3.11-slim",
            "command": ["python", "-c", "import sys; print(sys.argv[1])", "{args.n}"],
            "env": {"MODE": "{args.mode}"},
            "network": "host",
            "memory_bytes": 512 * 2**20,
            "cpus": 2,
            "pids_limit": 64,
            "read_only": False,
            "user": "0",
            "max_log_bytes": 4096,
            "tmpfs": {"/tmp": "size=16m"},
        }
    )

    assert engine_stand_in.connections_before_now() == []  # accepted with no engine contacted


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ({"image": "x", "volumes": ["/:/host"]}, ("volumes",)),
        ({"command": ["true"]}, ("image",)),
        ({"image": "x", "network": "host"}, ("network",)),
        ({"image": "x", "network": "bridge", "allow_network": "yes"}, ("allow_network",)),
        ({"image": "x", "network": "container:other"}, ("network",)),
        ({"image": "x", "memory_bytes": "256m"}, ("memory_bytes",)),
        ({"image": "x", "memory_bytes": 1024}, ("memory_bytes",)),
        ({"image": "x", "cpus": 0}, ("cpus",)),
        ({"image": "x", "pids_limit": -1}, ("pids_limit",)),
        ({"image": "x", "command": ["{args.program}"]}, ("command",)),
        ({"image": "x", "command": ["echo", "{os.environ}"]}, ("command", "1")),
        ({"image": "x", "env": {"BAD NAME": "1"}}, ("env", "BAD NAME")),
        ({"image": "x", "user": "root; id"}, ("user",)),
        ({"image": "x", "docker_host": "/var/run/docker.sock"}, ("docker_host",)),
        ({"image": "x", "tmpfs": {"tmp": "size=1m"}}, ("tmpfs", "tmp")),
    ],
)
def test_bad_settings_are_refused_where_they_are_without_an_engine(settings, where) -> None:
    with pytest.raises(ConfigError) as refused:
        DockerExecutor().check_settings(settings)

    assert refused.value.where == where
